//! COCO box and mask evaluation and classification metrics (issue 4). Nothing is built here yet; classification top-1/top-5 currently lives in the CLI (`nextdet test`).
