//! ANLCL training (DESIGN.md §6) through tch; only built with the `train` feature.
