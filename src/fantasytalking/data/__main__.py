"""``python -m fantasytalking.data VIDEOS... --out SHARDS`` (same as ``fantasytalking preprocess``)."""

from fantasytalking.data.preprocess import preprocess_main

if __name__ == "__main__":
    raise SystemExit(preprocess_main())
