import sys

from serve_app.kuberay.cli import main

sys.exit(main())
