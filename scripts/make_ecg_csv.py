"""Write made-up heartbeats in the MIT-BIH heartbeat CSV format (187 values in [0, 1], then the class
0-4; about 83 % class 0 as in the real files), to try `noderun experiment=ecg` without the real data.

They are not ECGs: accuracy on them says nothing about heartbeat classification. The real CSVs
(mitbih_train.csv, mitbih_test.csv) are on Kaggle: shayanfazeli/heartbeat.

Example: python scripts/make_ecg_csv.py --rows 5000 --out outputs/ecg_synthetic.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

from noderun.data.ecg import synthetic_heartbeats, write_ecg_csv


def main() -> None:
    """Write the file the options ask for."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5000, help="number of beats")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--out", type=Path, default=Path("outputs/ecg_synthetic.csv"), help="CSV file to write")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_ecg_csv(args.out, *synthetic_heartbeats(args.rows, args.seed))
    print(f"wrote {args.rows} made-up beats to {args.out}")


if __name__ == "__main__":
    main()
