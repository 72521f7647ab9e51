//! Image quality metrics as deraining papers compute them (DESIGN.md §8).
