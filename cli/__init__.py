"""aecore's command line (click): ``aecore --help``. The entry point is ``aecore.cli.main:main``."""
