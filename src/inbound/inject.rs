//! `vraagbaak inject` (in progress).
