//! Testing a checkpoint on a config's test split, mmdetection's `tools/test.py`: COCO box and
//! mask AP for detectors (with the results in mmdetection's JSON format and drawn images on
//! request), top-1 / top-5 for classifiers. Output paths are checked before any work starts.
//!
//! Distributed testing (mmdetection's `tools/dist_test.sh`): every rank of the process's default
//! group ([`nextdet_dist::world`]) calls [`test()`]; each predicts its share of the split, the
//! detections (or the top-k counts) are gathered, and rank 0 evaluates and writes the outputs:
//! the numbers are those of one process. The other ranks' reports hold no COCO statistics.

use crate::classifier::{evaluate_topk, init_classifier};
use crate::config::{model_kind, ModelKind};
use crate::data::classification::{open_folder, ClsDataConfig, ClsTestSplit};
use crate::data::{DetData, DetDataConfig};
use crate::detector::{evaluate_detections, init_detector, predict_dataset};
use crate::visualize::{draw_to_file, output_names};
use anyhow::{bail, Context, Result};
use nextdet_engine::config::Config;
use nextdet_evaluation::{CocoStats, IouType};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What to compute and write (the command line's options).
#[derive(Clone, Debug)]
pub struct TestOptions {
    /// Metrics: `bbox`, `segm` for detectors (empty: both when the model has masks); `top1` for
    /// classifiers.
    pub eval: Vec<String>,
    /// Detectors: where to write the COCO results (`<stem>.bbox.json`, `<stem>.segm.json`
    /// beside it); classifiers: the metrics JSON.
    pub out: Option<PathBuf>,
    /// Detectors: draw every test image with its detections into this folder.
    pub show_dir: Option<PathBuf>,
    /// The score threshold of the drawings.
    pub show_score_thr: f32,
}

impl Default for TestOptions {
    fn default() -> Self {
        Self { eval: Vec::new(), out: None, show_dir: None, show_score_thr: 0.3 }
    }
}

/// The outcome of a test.
#[derive(Debug)]
pub enum TestReport {
    /// A detector's COCO evaluation.
    Detection {
        /// Images evaluated.
        images: usize,
        /// Seconds spent predicting.
        seconds: f64,
        /// The 12 COCO numbers and per-category AP per IoU type.
        stats: Vec<(IouType, CocoStats)>,
        /// The results files written for `out`.
        results: Vec<(IouType, PathBuf)>,
        /// How many images were drawn for `show_dir`.
        drawn: usize,
    },
    /// A classifier's accuracy.
    Classification {
        /// Top-1 accuracy in percent.
        top1: f64,
        /// Top-5 accuracy in percent.
        top5: f64,
        /// Images evaluated.
        images: usize,
        /// Seconds spent.
        seconds: f64,
    },
}

/// Evaluates `checkpoint` on `cfg`'s test split (see the module docs).
pub fn test(cfg: &Config, checkpoint: &Path, opts: &TestOptions) -> Result<TestReport> {
    check_output_file(opts.out.as_deref())?;
    match model_kind(cfg)? {
        ModelKind::Classifier => test_classifier(cfg, checkpoint, opts),
        ModelKind::Detector => test_detector(cfg, checkpoint, opts),
    }
}

/// An output file must be creatable: its folder is made now, and it must not be a folder.
fn check_output_file(out: Option<&Path>) -> Result<()> {
    let Some(out) = out else { return Ok(()) };
    if out.is_dir() {
        bail!("--out {}: a folder, not a file name", out.display());
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("--out {}: cannot create its folder", out.display()))?;
    }
    Ok(())
}

fn test_classifier(cfg: &Config, checkpoint: &Path, opts: &TestOptions) -> Result<TestReport> {
    if let Some(other) = opts.eval.iter().find(|m| !matches!(m.as_str(), "top1" | "top5" | "accuracy")) {
        bail!("--eval {other}: a classifier reports `top1` (with top-5); `bbox`/`segm` need a detector config");
    }
    if opts.show_dir.is_some() {
        bail!("--show-dir draws detections; the config is a classifier's");
    }
    let classifier = init_classifier(cfg, checkpoint)?;
    let data = cfg.section::<Option<ClsDataConfig>>("data")?.unwrap_or_default();
    let Some(ClsTestSplit::ImageFolder(split)) = &data.test else {
        bail!("{}: no `data.test` split to evaluate on", crate::config::config_file(cfg));
    };
    let folder = open_folder(&split.root, "test", classifier.net().num_classes())?;
    let start = Instant::now();
    let acc = evaluate_topk(classifier.net(), &folder, &split.transform, split.batch_size, None, true)?;
    let report = TestReport::Classification {
        top1: acc.top1(),
        top5: acc.top5(),
        images: acc.seen(),
        seconds: start.elapsed().as_secs_f64(),
    };
    let main = nextdet_dist::world().is_main();
    if let (Some(path), TestReport::Classification { top1, top5, images, seconds }, true) = (&opts.out, &report, main) {
        let doc = serde_json::json!({"top1": top1, "top5": top5, "images": images, "seconds": seconds});
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

fn test_detector(cfg: &Config, checkpoint: &Path, opts: &TestOptions) -> Result<TestReport> {
    let detector = init_detector(cfg, checkpoint)?;
    let with_masks = detector.model().with_masks();
    let mut types = Vec::new();
    for e in &opts.eval {
        match e.as_str() {
            "bbox" => types.push(IouType::Bbox),
            "segm" if with_masks => types.push(IouType::Segm),
            "segm" => bail!("--eval segm: the model in {} has no mask head", crate::config::config_file(cfg)),
            other => bail!("--eval {other}: a detector reports `bbox` and `segm`"),
        }
    }
    if types.is_empty() {
        types.push(IouType::Bbox);
        if with_masks {
            types.push(IouType::Segm);
        }
    }
    let data: DetDataConfig = cfg.section("data")?;
    let split = data.test_split()?;
    let test = DetData::open(split, false, types.contains(&IouType::Segm))?;
    let drawings = match &opts.show_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("--show-dir {}: cannot create it", dir.display()))?;
            let images: Vec<PathBuf> = test.dataset.images().iter().map(|i| i.path.clone()).collect();
            let relative: Vec<PathBuf> = test.dataset.images().iter().map(|i| PathBuf::from(&i.file_name)).collect();
            Some(output_names(&images, &relative, dir))
        }
        None => None,
    };
    let start = Instant::now();
    let dets = predict_dataset(detector.model(), &test, data.workers_per_gpu)?;
    let seconds = start.elapsed().as_secs_f64();
    if !nextdet_dist::world().is_main() {
        return Ok(TestReport::Detection {
            images: dets.len(),
            seconds,
            stats: Vec::new(),
            results: Vec::new(),
            drawn: 0,
        });
    }
    let (evaluator, stats) = evaluate_detections(&split.ann_file, &dets, &types)?;
    let results = match &opts.out {
        Some(out) => evaluator.write_results(&out.with_extension(""))?,
        None => Vec::new(),
    };
    let mut drawn = 0;
    if let Some(names) = drawings {
        for (i, (d, n)) in dets.iter().zip(&names).enumerate() {
            let info = test.dataset.image_info(i).context("image index")?;
            draw_to_file(&info.path, d, detector.class_names(), opts.show_score_thr, &n.drawing)?;
            drawn += 1;
        }
    }
    Ok(TestReport::Detection { images: dets.len(), seconds, stats, results, drawn })
}
