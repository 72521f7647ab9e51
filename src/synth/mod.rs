//! Rain synthesis: streak layers and veil over clean frames (DESIGN.md §7).
