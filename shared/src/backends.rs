//! Builds the five seams from configuration.
