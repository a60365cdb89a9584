//! How the commands print their results: text on stderr/stdout as mmdetection's tools do, or
//! one JSON document on stdout with `--json`.

use nextdet_apis::{AnalyzeReport, BenchOptions, BenchReport, ClassScore, TestReport};
use std::collections::BTreeMap;
use std::path::Path;

/// `classify`: an image's top-k classes, one per line.
pub fn classification(path: &Path, top: &[ClassScore]) {
    println!("{}", path.display());
    for (rank, c) in top.iter().enumerate() {
        println!("  {:>2}. {:.4}  {} ({})", rank + 1, c.prob, c.name, c.class);
    }
}

/// `test`: the metrics, as text (COCO's summary lines and a per-category AP table, or top-1 /
/// top-5) or one JSON document.
pub fn test_report(report: &TestReport, config: &Path, checkpoint: &Path, json: bool) {
    match report {
        TestReport::Classification { top1, top5, images, seconds } => {
            if json {
                let doc = serde_json::json!({
                    "top1": top1, "top5": top5, "images": images, "seconds": seconds,
                    "config": config, "checkpoint": checkpoint,
                });
                println!("{doc}");
            } else {
                eprintln!("top-1 {top1:.2}%  top-5 {top5:.2}%  on {images} images");
            }
        }
        TestReport::Detection { images, seconds, stats, results, drawn } => {
            for (t, path) in results {
                eprintln!("{t} results written to {}", path.display());
            }
            if *drawn > 0 {
                eprintln!("drawn {drawn} images");
            }
            if json {
                let metrics: BTreeMap<String, _> = stats.iter().map(|(t, s)| (t.to_string(), s)).collect();
                let doc = serde_json::json!({
                    "config": config, "checkpoint": checkpoint, "images": images, "seconds": seconds,
                    "metrics": metrics,
                });
                println!("{doc}");
                return;
            }
            for (t, s) in stats {
                eprintln!("Evaluate annotation type *{t}*");
                for line in s.summary_lines() {
                    eprintln!("{line}");
                }
                let table: Vec<String> = s.per_category.iter().map(|c| format!("{} {:.3}", c.name, c.ap)).collect();
                eprintln!("per-category AP: {}", table.join(", "));
            }
            eprintln!("{images} images in {seconds:.1} s ({:.2} images/s)", *images as f64 / seconds);
        }
    }
}

/// `benchmark`: one line, or one JSON document.
pub fn benchmark(r: &BenchReport, config: &Path, opts: &BenchOptions, json: bool) {
    let (h, w) = opts.shape;
    let mode = format!("{:?}", opts.mode).to_lowercase();
    if json {
        let doc = serde_json::json!({
            "config": config, "mode": mode, "batch": opts.batch, "shape": [h, w], "iters": opts.iters,
            "threads": r.threads, "ms_per_iter": r.ms_per_iter, "images_per_s": r.images_per_s,
            "peak_memory_mib": r.peak_memory_mib,
        });
        println!("{doc}");
    } else {
        let peak = r.peak_memory_mib.map_or("n/a".into(), |p| format!("{p:.0} MiB"));
        println!(
            "{} {:?} batch {} {h}x{w} threads {}: {:.1} ms/iter, {:.2} images/s, peak memory {peak}",
            config.display(),
            opts.mode,
            opts.batch,
            r.threads,
            r.ms_per_iter,
            r.images_per_s
        );
    }
}

/// `analyze`: the module table cut at `depth` on stdout, or one JSON document with every module.
pub fn analyze(report: &AnalyzeReport, config: &Path, depth: usize, json: bool) -> anyhow::Result<()> {
    if json {
        let mut doc = serde_json::to_value(report)?;
        doc["config"] = serde_json::json!(config);
        println!("{doc}");
    } else {
        println!("{}", config.display());
        print!("{}", report.table(depth));
    }
    Ok(())
}
