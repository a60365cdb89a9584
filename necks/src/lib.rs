//! FPN neck (issue 6). Nothing is built here yet; the crate exists so that the workspace has its final shape.
