//! `nextdet test` for detectors: runs a checkpoint over the config's test split, prints the 12
//! COCO numbers and the per-category AP for boxes and masks, optionally writes the results in
//! mmdetection's COCO JSON format (`--out`) and draws every image (`--show-dir`).

use crate::common::{build_with_checkpoint, load_config};
use crate::detection::{evaluate, predict_split, DetData, DetDataConfig};
use crate::infer::draw_image;
use anyhow::{bail, Context, Result};
use nextdet_evaluation::IouType;
use nextdet_models::Model;
use std::path::Path;
use std::time::Instant;

/// Command-line options of `nextdet test` for a detector.
pub struct TestOptions<'a> {
    /// `--eval`: `bbox`, `segm` (empty: both when the model has masks).
    pub eval: &'a [String],
    /// `--out`: where to write the results (`<stem>.bbox.json`, `<stem>.segm.json` beside it).
    pub out: Option<&'a Path>,
    /// `--show-dir`: where to draw each image with its detections.
    pub show_dir: Option<&'a Path>,
    /// `--show-score-thr`.
    pub score_thr: f32,
    /// `--json`: print the metrics as one JSON document.
    pub json: bool,
}

/// Evaluates `checkpoint` on the test split (`data.test`, or `data.val`).
pub fn run(config: &Path, checkpoint: &Path, opts: &TestOptions, overrides: &[String]) -> Result<()> {
    let cfg = load_config(config, overrides)?;
    let Model::Detector(model) = build_with_checkpoint(&cfg, Some(checkpoint))? else {
        bail!("{}: not a detector config", config.display());
    };
    let mut types = Vec::new();
    for e in opts.eval {
        match e.as_str() {
            "bbox" => types.push(IouType::Bbox),
            "segm" if model.with_masks() => types.push(IouType::Segm),
            "segm" => bail!("--eval segm: the model in {} has no mask head", config.display()),
            other => bail!("--eval {other}: a detector reports `bbox` and `segm`"),
        }
    }
    if types.is_empty() {
        types.push(IouType::Bbox);
        if model.with_masks() {
            types.push(IouType::Segm);
        }
    }
    let data: DetDataConfig = cfg.section("data")?;
    let split = data.test.as_ref().or(data.val.as_ref()).context("the config has no data.test or data.val split")?;
    let test = DetData::open(split, false, types.contains(&IouType::Segm))?;
    let start = Instant::now();
    let dets = predict_split(&model, &test, data.workers_per_gpu)?;
    let seconds = start.elapsed().as_secs_f64();
    let (evaluator, stats) = evaluate(&split.ann_file, &dets, &types)?;
    if let Some(out) = opts.out {
        let prefix = out.with_extension("");
        for (t, path) in evaluator.write_results(&prefix)? {
            eprintln!("{t} results written to {}", path.display());
        }
    }
    if let Some(dir) = opts.show_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let names = test.dataset.class_names().to_vec();
        for (i, d) in dets.iter().enumerate() {
            let info = test.dataset.image_info(i).context("image index")?;
            let path = dir.join(Path::new(&info.file_name).with_extension("png").file_name().unwrap_or_default());
            draw_image(&info.path, d, &names, opts.score_thr, &path)?;
        }
        eprintln!("drawn {} images into {}", dets.len(), dir.display());
    }
    if opts.json {
        let doc = serde_json::json!({
            "config": config, "checkpoint": checkpoint, "images": dets.len(), "seconds": seconds,
            "metrics": stats.iter().map(|(t, s)| (t.to_string(), s)).collect::<std::collections::BTreeMap<_, _>>(),
        });
        println!("{doc}");
    } else {
        for (t, s) in &stats {
            eprintln!("Evaluate annotation type *{t}*");
            for line in s.summary_lines() {
                eprintln!("{line}");
            }
            let table: Vec<String> = s.per_category.iter().map(|c| format!("{} {:.3}", c.name, c.ap)).collect();
            eprintln!("per-category AP: {}", table.join(", "));
        }
        eprintln!("{} images in {seconds:.1} s ({:.2} images/s)", dets.len(), dets.len() as f64 / seconds);
    }
    Ok(())
}
