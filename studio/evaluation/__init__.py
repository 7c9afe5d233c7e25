"""Measuring the product: evaluation protocols on real data (protocols), the benchmark suite
(bench), plots (plots) and the machine a report was measured on (machine)."""
