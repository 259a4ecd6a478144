"""Fetch MobileSAM into .cache/ (or the path given), and with --code DIR the MobileSAM authors'
code as a checkout-shaped folder (for `regionspot bench predict --mobile-sam-reference DIR`):

    python scripts/fetch_mobile_sam.py [OUT.pt] [--code .cache/mobile_sam_code]
"""

import argparse
from pathlib import Path

from regionspot.assets import fetch_mobile_sam, fetch_mobile_sam_code

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", default=".cache/mobile_sam.pt", type=Path)
    parser.add_argument("--code", type=Path, help="also fetch the authors' code into this folder")
    args = parser.parse_args()
    fetch_mobile_sam(args.checkpoint)
    if args.code is not None:
        print(f"MobileSAM's code in {fetch_mobile_sam_code(args.code)}")
