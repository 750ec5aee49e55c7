from ccat_tf.cli import main

raise SystemExit(main())
