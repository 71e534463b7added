//! The 2x2 analysis chart.
