"""The ``edu-seg`` command.

    edu-seg info      print what edu_seg runs on (backend, threads, BLAS, GPU)
    edu-seg demo      the built-in default job (``make demo``)
"""
import argparse
import sys

from . import backend


def cmd_info(args):
    backend.show_config()
    return 0


def cmd_demo(args):
    # Until the training loop lands, the demo proves the build: import, kernels, config.
    backend.show_config()
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="edu-seg", description=__doc__.split("\n")[1])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="show the configuration").set_defaults(func=cmd_info)
    sub.add_parser("demo", help="run the built-in default job").set_defaults(func=cmd_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
