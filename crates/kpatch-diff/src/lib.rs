//! Object differ: correlate, compare, include, and write the changed functions (create-diff-object).
