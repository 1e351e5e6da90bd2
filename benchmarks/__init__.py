"""Side-by-side benchmarks with peers (imagehash, imagededup); see README.md."""
