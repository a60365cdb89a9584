//! Detection heads: anchors, RPN, box and mask heads, cascade, losses (issues 3 and 6). Nothing is built here yet.
