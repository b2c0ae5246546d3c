"""``python -m fantasytalking.testing make-tiny-weights DIR --layout original|diffusers [--seed N]``."""

from __future__ import annotations

import argparse
import sys

from fantasytalking.errors import FantasyTalkingError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fantasytalking.testing", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tiny = sub.add_parser("make-tiny-weights", help="write a tiny random weights folder in the official layout")
    tiny.add_argument("directory", help="folder to write (created if needed)")
    tiny.add_argument("--layout", choices=("original", "diffusers"), default="original")
    tiny.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from .tiny import make_tiny_weights

    try:
        root = make_tiny_weights(args.directory, args.layout, seed=args.seed)
    except FantasyTalkingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
