"""Write an image list as a Caffe LMDB of Datum records (Caffe's convert_imageset).

LIST has one 'PATH LABEL' line per image, PATH relative to ROOT. The database has Caffe's
keys (%08d_PATH) and records, so Caffe reads it as well as solverkit's Data layer
(backend: LMDB). Colour images are stored BGR, as Caffe does. DB must not exist yet.
"""

from __future__ import annotations

from ..caffe.imageset import convert_imageset


def add_arguments(parser) -> None:
    parser.add_argument("root", metavar="ROOT", help="the folder the list's paths are under")
    parser.add_argument("list", metavar="LIST", help="the image list: 'PATH LABEL' lines")
    parser.add_argument("db", metavar="DB", help="the LMDB folder to create")
    parser.add_argument("--resize-height", type=int, default=0, metavar="H",
                        help="resize every image to H rows (with --resize-width)")
    parser.add_argument("--resize-width", type=int, default=0, metavar="W",
                        help="resize every image to W columns (with --resize-height)")
    parser.add_argument("--gray", action="store_true", help="store one gray channel")
    parser.add_argument("--shuffle", action="store_true",
                        help="shuffle the lines first (with --seed)")
    parser.add_argument("--seed", type=int, default=0, help="the shuffle's seed (default 0)")
    parser.add_argument("--encoded", action="store_true",
                        help="store PNG/JPEG bytes instead of raw pixels")
    parser.add_argument("--encode-type", choices=("png", "jpg"), default="",
                        help="the encoding of --encoded records (default: each file's own)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip missing or undecodable images (counted) instead of stopping")


def run(args) -> int:
    count = convert_imageset(args.root, args.list, args.db, resize_height=args.resize_height,
                             resize_width=args.resize_width, gray=args.gray,
                             shuffle=args.shuffle, encoded=args.encoded,
                             encode_type=args.encode_type, seed=args.seed,
                             skip_bad=args.skip_bad, progress=False if args.quiet else None)
    print(f"wrote {count} records to {args.db}")
    return 0
