//! `nextdet coco-eval`: a standalone pycocotools replacement that evaluates a COCO results file
//! against a COCO ground truth and prints the 12 summary numbers and a per-category AP table.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use nextdet_evaluation::{evaluate_files, IouType, STAT_NAMES};

/// What `--iou-type` accepts.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum IouTypeArg {
    /// Box IoU on the results' `bbox`.
    Bbox,
    /// Mask IoU on the results' `segmentation`.
    Segm,
}

impl From<IouTypeArg> for IouType {
    fn from(arg: IouTypeArg) -> Self {
        match arg {
            IouTypeArg::Bbox => IouType::Bbox,
            IouTypeArg::Segm => IouType::Segm,
        }
    }
}

/// Evaluates `dt` against `gt` and prints pycocotools' summary and the per-category AP table to
/// stdout, or one JSON document with `json`. The time taken goes to stderr.
pub fn run(gt: &Path, dt: &Path, iou_type: IouTypeArg, json: bool) -> Result<()> {
    let iou_type = IouType::from(iou_type);
    let start = Instant::now();
    let result = evaluate_files(gt, dt, iou_type)?;
    let seconds = start.elapsed().as_secs_f64();
    if json {
        let stats: serde_json::Map<String, serde_json::Value> =
            result.named().map(|(name, value)| (name.to_string(), value.into())).collect();
        let doc = serde_json::json!({
            "gt": gt,
            "dt": dt,
            "iou_type": iou_type.as_str(),
            "stats": stats,
            "stats_list": result.stats,
            "stat_names": STAT_NAMES,
            "per_category": result.per_category,
            "seconds": seconds,
        });
        println!("{doc}");
    } else {
        println!("Evaluate annotation type *{iou_type}*");
        for line in result.summary_lines() {
            println!("{line}");
        }
        println!();
        let width = result.per_category.iter().map(|c| c.name.len()).max().unwrap_or(0).max(8);
        println!("{:<width$} {:>8} {:>7}", "category", "id", "AP");
        for c in &result.per_category {
            let ap = if c.ap < 0.0 { "n/a".to_string() } else { format!("{:.3}", c.ap) };
            println!("{:<width$} {:>8} {:>7}", c.name, c.id, ap);
        }
    }
    eprintln!("coco-eval ({iou_type}) took {seconds:.3} s");
    Ok(())
}
