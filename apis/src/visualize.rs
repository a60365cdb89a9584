//! Drawing detections over their images, and the rule that names the files `infer` and
//! `test --show-dir` write.
//!
//! The naming rule: an output keeps the image's path relative to its root (the common folder of
//! `infer`'s inputs, the dataset's image folder for `test`) under the output folder, with the
//! extension `.png` (the drawing) or `.json` (the detections). Two inputs that would get the
//! same name (`a.png` and `a.jpg`) are told apart by keeping the later ones' extension
//! (`a.jpg.png`), and when an output would land on an input file, the drawing and the JSON
//! both get `.det` before their extension (`img.det.png`, `img.det.json`): an output never
//! replaces an input.

use anyhow::{Context, Result};
use nextdet_datasets::draw::{draw_detections, save_png, DrawItem};
use nextdet_datasets::{load_rgb8_with, DecodeConvention};
use nextdet_evaluation::Detections;
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

/// Draws `dets` over the image file `image` (boxes, class names, scores at or above
/// `score_thr`, mask overlays) and writes the PNG to `out`.
pub fn draw_to_file(image: &Path, dets: &Detections, names: &[String], score_thr: f32, out: &Path) -> Result<()> {
    let img = load_rgb8_with(image, DecodeConvention::OpenCv)?;
    let masks: Vec<Vec<u8>> = dets.masks.iter().flatten().map(|m| m.to_row_major_mask()).collect();
    let items: Vec<DrawItem> = (0..dets.boxes.len())
        .map(|i| DrawItem {
            bbox: dets.boxes[i],
            label: dets.labels[i],
            score: dets.scores[i],
            mask: masks.get(i).map(Vec::as_slice),
        })
        .collect();
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    save_png(&draw_detections(&img, &items, names, score_thr), out)?;
    Ok(())
}

/// The paths a run's outputs get for each input (see the module docs): `relative[i]` is input
/// `i`'s path relative to its root, `inputs[i]` its real path.
pub fn output_names(inputs: &[PathBuf], relative: &[PathBuf], out_dir: &Path) -> Vec<OutputNames> {
    let canonical: HashSet<PathBuf> = inputs.iter().filter_map(|p| std::fs::canonicalize(p).ok()).collect();
    let is_input = |p: &Path| {
        let parent = p.parent().and_then(|d| std::fs::canonicalize(d).ok());
        parent.is_some_and(|d| canonical.contains(&d.join(p.file_name().unwrap_or_default())))
    };
    let mut taken: HashSet<PathBuf> = HashSet::new();
    let mut out = Vec::with_capacity(relative.len());
    for rel in relative {
        let rel = strip_root(rel);
        let mut base = out_dir.join(rel.with_extension(""));
        if taken.contains(&base) {
            base = out_dir.join(&rel);
        }
        let mut k = 2;
        while taken.contains(&base) {
            base = out_dir.join(format!("{}.{k}", rel.display()));
            k += 1;
        }
        taken.insert(base.clone());
        let (png, json) = (append_extension(&base, "png"), append_extension(&base, "json"));
        out.push(if is_input(&png) || is_input(&json) {
            OutputNames { drawing: append_extension(&base, "det.png"), detections: append_extension(&base, "det.json") }
        } else {
            OutputNames { drawing: png, detections: json }
        });
    }
    out
}

/// Where one input's outputs go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputNames {
    /// The PNG with the detections drawn.
    pub drawing: PathBuf,
    /// The JSON list of detections.
    pub detections: PathBuf,
}

/// `path` + `.ext` (keeping any extension it has).
fn append_extension(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// A relative path without leading `/`, `.` or `..` components, so that it stays inside the
/// output folder.
fn strip_root(rel: &Path) -> PathBuf {
    rel.components().filter(|c| matches!(c, Component::Normal(_))).collect()
}

/// Each input's path relative to the inputs' deepest common folder.
pub fn relative_to_common_root(inputs: &[PathBuf]) -> Vec<PathBuf> {
    let absolute: Vec<PathBuf> = inputs.iter().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())).collect();
    let mut root: Option<PathBuf> = None;
    for p in &absolute {
        let dir = p.parent().unwrap_or(Path::new("")).to_path_buf();
        root = Some(match root {
            None => dir,
            Some(r) => r.components().zip(dir.components()).take_while(|(a, b)| a == b).map(|(a, _)| a).collect(),
        });
    }
    let root = root.unwrap_or_default();
    absolute.iter().map(|p| p.strip_prefix(&root).map_or_else(|_| p.clone(), Path::to_path_buf)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_never_an_input() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        for f in ["a.png", "a.jpg", "d1/x.png", "d2/x.png"] {
            std::fs::create_dir_all(d.join(f).parent().unwrap()).unwrap();
            std::fs::write(d.join(f), b"x").unwrap();
        }
        let inputs: Vec<PathBuf> = ["a.png", "a.jpg", "d1/x.png", "d2/x.png"].iter().map(|f| d.join(f)).collect();
        let rel = relative_to_common_root(&inputs);
        assert_eq!(rel, ["a.png", "a.jpg", "d1/x.png", "d2/x.png"].map(PathBuf::from));
        // drawing into the images' own folder
        let names = output_names(&inputs, &rel, d);
        let drawings: Vec<PathBuf> = names.iter().map(|n| n.drawing.strip_prefix(d).unwrap().to_path_buf()).collect();
        assert_eq!(drawings, ["a.det.png", "a.jpg.png", "d1/x.det.png", "d2/x.det.png"].map(PathBuf::from));
        assert_eq!(names[1].detections, d.join("a.jpg.json"));
        // elsewhere: plain names
        let names = output_names(&inputs, &rel, &d.join("out"));
        assert_eq!(names[0].drawing, d.join("out/a.png"));
        assert_eq!(names[3].drawing, d.join("out/d2/x.png"));
        // a relative path cannot climb out of the output folder
        let names = output_names(&inputs[..1], &[PathBuf::from("../../a.png")], &d.join("out"));
        assert_eq!(names[0].drawing, d.join("out/a.png"));
    }
}
