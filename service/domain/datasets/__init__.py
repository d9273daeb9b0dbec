"""Data in: generators, JSON points, .npy and CSV files, all to float64 arrays; stored datasets."""
