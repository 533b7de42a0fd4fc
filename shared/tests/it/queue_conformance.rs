//! (written with its seam)
