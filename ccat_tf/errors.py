"""The one exception type users see.

Every problem a user can fix (a missing frame, a bad setting, a corrupt model file) is raised as a
:class:`CcatError` whose message is one line naming the file or setting and the fix. The CLI prints
it as ``ccat-tf: error: <message>`` and exits with status 2, without a traceback unless
``--debug`` is given.
"""

from __future__ import annotations


class CcatError(Exception):
    """A user-fixable problem. ``str(err)`` is a single line: what is wrong, where, and the fix."""

    exit_code = 2
    #: The process cannot be used after this error (a distributed runtime that lost a peer):
    #: the CLI ends it as soon as the error line is out, skipping the interpreter's teardown,
    #: whose library finalisers would only print tracebacks after the one line.
    ends_process = False

    def __init__(self, message: str):
        # Keep the promise of a one-line message even when a caller formats in a newline, and
        # show any control character quoted from a file (an ESC sequence, a bidi override) as
        # an escape, so a hostile file cannot clear the screen or forge a line.
        from ccat_tf.safe_text import visible

        super().__init__(visible(" ".join(str(message).split())))


class DataSetError(CcatError):
    """The data set (frames, channels, resolutions, values) cannot be trained on."""


class SettingsError(CcatError):
    """A setting has a wrong value or type, or an unknown key was given."""


class ModelFileError(CcatError):
    """A .cat or .ost file is missing, corrupt, hostile or incompatible."""


class DataDirectoryError(CcatError):
    """The Data Directory is locked by another process, unwritable, or full."""


class HookError(CcatError):
    """A user callback (Python tab hook) raised; training or rendering stopped cleanly."""


class TrainingInterrupted(CcatError):
    """SIGTERM/SIGINT arrived; progress was saved and the run can be resumed."""

    # 75 is EX_TEMPFAIL: "try again later". Schedulers and Snakemake's --retries treat it as a
    # failed attempt, and SLURM requeues it with --requeue; the next attempt resumes from the .ost.
    exit_code = 75


class NonFiniteLoss(CcatError):
    """The loss became NaN or Inf; the last good .ost and .cat were kept."""
