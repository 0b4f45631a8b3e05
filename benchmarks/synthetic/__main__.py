"""Render a ground-truth capture, or the bundled sample.

    python -m benchmarks.synthetic --out DIR [--views 24] [--size 1024x768] [--object procedural-box] [--mode orbit]
    python -m benchmarks.synthetic --sample assets/sample      # the bundled sample capture
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from benchmarks.synthetic import SAMPLE_SPEC, CaptureSpec, render_capture
from benchmarks.synthetic.spec import DEFAULT_SEED
from core.progress import TerminalProgress


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="output folder")
    parser.add_argument("--sample", type=Path, metavar="DIR", help="write the bundled sample capture into DIR")
    parser.add_argument("--views", type=int, default=24)
    parser.add_argument("--size", default="1024x768", help="WIDTHxHEIGHT")
    parser.add_argument("--object", default="procedural-box",
                        help="procedural-box, procedural-bottle, or a folder with a textured OBJ")
    parser.add_argument("--mode", choices=["orbit", "turntable"], default="orbit")
    parser.add_argument("--backdrop", choices=["plain", "textured", "none"], default="plain")
    parser.add_argument("--support", choices=["textured", "plain", "none"], default="textured")
    parser.add_argument("--product-texture", choices=["packaging", "rich", "plain"], default="packaging")
    parser.add_argument("--elevations", default="25,40", help="ring elevations in degrees, comma-separated")
    parser.add_argument("--format", choices=["jpg", "png"], default="jpg")
    parser.add_argument("--no-depth", action="store_true", help="skip depth/ and masks/")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.sample is not None:
        spec, out = SAMPLE_SPEC, args.sample
    elif args.out is not None:
        width, height = (int(x) for x in args.size.lower().split("x"))
        spec = CaptureSpec(object=args.object, mode=args.mode, backdrop=args.backdrop, support=args.support,
                           product_texture=args.product_texture, num_views=args.views, width=width, height=height,
                           elevations_deg=tuple(float(e) for e in args.elevations.split(",")),
                           image_format=args.format, write_depth=not args.no_depth, write_masks=not args.no_depth,
                           seed=args.seed)
        out = args.out
    else:
        parser.error("give --out DIR or --sample DIR")
    bar = TerminalProgress()
    gt = render_capture(spec, out, bar)
    bar.close()
    print(f"{len(gt.image_names)} photos in {gt.image_dir}; ground truth in {gt.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
