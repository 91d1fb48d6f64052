"""Compute the mean image of an LMDB, an image list or a folder of class folders, as
Caffe's mean.binaryproto (a 1 x C x H x W BlobProto; use it as transform: {mean_file: ...}).
"""

from __future__ import annotations

from ..caffe.imageset import compute_image_mean


def add_arguments(parser) -> None:
    parser.add_argument("source", metavar="DB|LIST",
                        help="an LMDB folder, an image list ('PATH LABEL' lines), or a folder "
                             "of class folders")
    parser.add_argument("-o", "--output", required=True, metavar="mean.binaryproto",
                        help="the mean file to write")
    parser.add_argument("--root", metavar="FOLDER",
                        help="the folder a list's paths are under (default: the list's)")
    parser.add_argument("--gray", action="store_true", help="images: one gray channel")
    parser.add_argument("--resize-height", type=int, default=0, metavar="H",
                        help="images: resize to H rows (with --resize-width)")
    parser.add_argument("--resize-width", type=int, default=0, metavar="W",
                        help="images: resize to W columns (with --resize-height)")
    parser.add_argument("--force", action="store_true", help="replace an existing output")


def run(args) -> int:
    mean = compute_image_mean(args.source, args.output, root=args.root, gray=args.gray,
                              resize_height=args.resize_height, resize_width=args.resize_width,
                              force=args.force, progress=False if args.quiet else None)
    print(f"wrote {args.output}: mean of shape {'x'.join(map(str, (1, *mean.shape)))}, "
          f"per channel {', '.join(f'{v:.3f}' for v in mean.mean(axis=(1, 2)))}")
    return 0
