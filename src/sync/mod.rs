//! Block sync (in progress).
