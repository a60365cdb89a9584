//! Built-in synthetic datasets of coloured shapes, so that training, evaluation and the tests run
//! with no download.
//!
//! [`make_detection`] writes a COCO-format instance segmentation set and [`make_classification`]
//! an `ImageFolder` classification set, both over the [`CATEGORIES`] (circle, square, triangle,
//! star, hexagon; every shape is a polygon, a circle has 32 vertices). Images have noisy gradient
//! backgrounds and randomly coloured, lightly textured shapes. Everything is drawn from a
//! `StdRng` seeded per image from the dataset seed, so a seed gives byte-identical files.
//!
//! Annotations equal what is drawn, to the pixel. Shapes are rasterized with the same
//! [`polygons_to_mask`] (pycocotools-exact) that reads the annotations back. Later shapes are
//! drawn over earlier ones, so each instance's visible mask is its raster minus the later
//! rasters; a new shape is rejected if it would hide more than half of an earlier one. A shape
//! that stays whole is annotated with its polygon, an occluded one with a compressed RLE of its
//! visible pixels. Some images hold a crowd: a cluster of tiny shapes of one category annotated
//! once with `iscrowd: 1` and an uncompressed RLE, as COCO annotates crowds. `area` is the
//! visible pixel count and `bbox` the visible mask's tight box `[x, y, w, h]`.

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use image::ImageEncoder;
use nextdet_evaluation::polygons_to_mask;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::sample::Bitmap;

/// The shape categories, in category-id order (ids start at 1).
pub const CATEGORIES: [&str; 5] = ["circle", "square", "triangle", "star", "hexagon"];
/// Training images written by [`ensure_detection`].
pub const DEFAULT_DETECTION_TRAIN: usize = 400;
/// Validation images written by [`ensure_detection`].
pub const DEFAULT_DETECTION_VAL: usize = 100;
/// Training images per class written by [`ensure_classification`]. ConvNeXt-atto from scratch
/// needs this many: with 1000 per class it memorizes the set and stops near 88% top-1 (PyTorch,
/// timm `convnext_atto`, 5000 steps of 32), with 4000 it passes 95%.
pub const DEFAULT_CLASSIFICATION_TRAIN_PER_CLASS: usize = 4000;
/// Validation images per class written by [`ensure_classification`].
pub const DEFAULT_CLASSIFICATION_VAL_PER_CLASS: usize = 50;
/// The seed [`ensure_detection`] and [`ensure_classification`] use.
pub const DEFAULT_SEED: u64 = 0;

/// Shortest and longest image side of the detection set, in pixels.
const DET_SIDE: (usize, usize) = (160, 320);
/// Shortest and longest side of the (square) classification images, in pixels. Square, so that
/// a centre crop or a resize to a square input never cuts off or squashes the shape.
const CLS_SIDE: (usize, usize) = (64, 96);
/// Smallest and largest shape diameter of the classification set, as a fraction of the side.
/// Large enough that a circle and a hexagon differ by a few pixels at a 64 px input: with
/// 30%..80% ConvNeXt-atto stays near 60% top-1 on 20000 images where 50%..90% reaches 95%.
const CLS_DIAMETER: (f64, f64) = (0.5, 0.9);
/// Name of the marker file [`make_classification`] writes at the top of the set.
pub const CLASSIFICATION_MARKER: &str = "shapes_cls.version";
/// Contents of [`CLASSIFICATION_MARKER`]: names this generator, so that [`ensure_classification`]
/// refuses a folder an earlier generator (1000 non-square images, smaller shapes) wrote instead
/// of silently training on it. Change it whenever the generated images change.
pub const CLASSIFICATION_VERSION: &str = "nextdet shapes classification v2: square 64..96 px, diameter 50%..90%, \
4000 train / 50 val per class by default";
/// Smallest visible area (pixels) an instance may be left with.
const MIN_VISIBLE: usize = 20;

/// What a generator wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShapesSummary {
    /// Training images.
    pub train_images: usize,
    /// Validation images.
    pub val_images: usize,
    /// Training instances (non-crowd annotations; one per image for classification).
    pub train_instances: usize,
    /// Validation instances.
    pub val_instances: usize,
    /// Crowd annotations over both splits (0 for classification).
    pub crowd_regions: usize,
}

/// Why a synthetic dataset could not be written. Every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum ShapesError {
    /// A file or folder could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// An image could not be encoded or a polygon rasterized.
    #[error("cannot generate {}: {reason}", path.display())]
    Generate {
        /// The file being written.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The target exists and is not a folder (a file, a device).
    #[error("{}: exists and is not a folder; give a new folder for the dataset", path.display())]
    NotAFolder {
        /// The target.
        path: PathBuf,
    },
    /// The target folder exists and is not empty (`nextdet make-shapes` writes into a new one).
    #[error("{}: the folder exists and is not empty; give a new folder", path.display())]
    NotEmpty {
        /// The target.
        path: PathBuf,
    },
    /// The target folder exists, is not empty, and is not a finished dataset.
    #[error("{} exists but is not a complete synthetic dataset ({reason}); remove it or choose another folder", dir.display())]
    Incomplete {
        /// The folder.
        dir: PathBuf,
        /// What is missing.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ShapesError + '_ {
    move |source| ShapesError::Io { path: path.to_path_buf(), source }
}

// ---- drawing ----

/// A per-image generator seeded from the dataset seed, the split and the index, so images do
/// not depend on each other.
fn image_rng(seed: u64, stream: u64, index: usize) -> StdRng {
    let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ index as u64;
    StdRng::seed_from_u64(mixed)
}

/// The outline of a shape of category `cat` centred at `(cx, cy)` with circumradius `r`,
/// rotated by `rot` radians; coordinates rounded to 1/100 px so the JSON holds them exactly.
fn shape_polygon(cat: usize, cx: f64, cy: f64, r: f64, rot: f64) -> Vec<f64> {
    let (n, inner) = match cat {
        0 => (32, 1.0),
        1 => (4, 1.0),
        2 => (3, 1.0),
        3 => (10, 0.45),
        _ => (6, 1.0),
    };
    let mut poly = Vec::with_capacity(2 * n);
    for k in 0..n {
        let radius = if k % 2 == 1 { r * inner } else { r };
        let a = rot + std::f64::consts::TAU * k as f64 / n as f64;
        poly.push(((cx + radius * a.cos()) * 100.0).round() / 100.0);
        poly.push(((cy + radius * a.sin()) * 100.0).round() / 100.0);
    }
    poly
}

fn rasterize(polys: &[Vec<f64>], w: usize, h: usize, path: &Path) -> Result<Bitmap, ShapesError> {
    let data = polygons_to_mask(polys, h as u32, w as u32)
        .map_err(|e| ShapesError::Generate { path: path.to_path_buf(), reason: e.to_string() })?;
    Ok(Bitmap { width: w, height: h, data })
}

fn random_color(rng: &mut StdRng) -> [u8; 3] {
    [rng.gen(), rng.gen(), rng.gen()]
}

fn color_distance(a: [u8; 3], b: [u8; 3]) -> i32 {
    a.iter().zip(&b).map(|(&x, &y)| (x as i32 - y as i32).abs()).sum()
}

/// A fill colour that stands out from both background end colours.
fn fill_color(rng: &mut StdRng, bg: &[[u8; 3]; 2]) -> [u8; 3] {
    loop {
        let c = random_color(rng);
        if bg.iter().all(|&b| color_distance(c, b) >= 150) {
            return c;
        }
    }
}

/// A linear gradient between two random colours in a random direction, plus per-pixel noise.
fn background(rng: &mut StdRng, w: usize, h: usize) -> (Vec<u8>, [[u8; 3]; 2]) {
    let ends = [random_color(rng), random_color(rng)];
    let angle: f64 = rng.gen_range(0.0..std::f64::consts::TAU);
    let (dx, dy) = (angle.cos(), angle.sin());
    let extent = (w as f64 * dx.abs() + h as f64 * dy.abs()).max(1.0);
    let (ox, oy) = (w as f64 / 2.0, h as f64 / 2.0);
    let mut data = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let t = (((x as f64 - ox) * dx + (y as f64 - oy) * dy) / extent + 0.5).clamp(0.0, 1.0);
            for c in 0..3 {
                let v = ends[0][c] as f64 * (1.0 - t) + ends[1][c] as f64 * t + rng.gen_range(-12.0..12.0);
                data[(y * w + x) * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    (data, ends)
}

/// Paints the set pixels of `mask` with `color` plus light per-pixel noise.
fn paint(rng: &mut StdRng, data: &mut [u8], mask: &Bitmap, color: [u8; 3]) {
    for (i, &m) in mask.data.iter().enumerate() {
        if m != 0 {
            for c in 0..3 {
                let v = color[c] as i32 + rng.gen_range(-8..=8);
                data[i * 3 + c] = v.clamp(0, 255) as u8;
            }
        }
    }
}

fn write_png(path: &Path, w: usize, h: usize, data: &[u8]) -> Result<(), ShapesError> {
    let file = std::fs::File::create(path).map_err(io_err(path))?;
    image::codecs::png::PngEncoder::new(BufWriter::new(file))
        .write_image(data, w as u32, h as u32, image::ExtendedColorType::Rgb8)
        .map_err(|e| ShapesError::Generate { path: path.to_path_buf(), reason: e.to_string() })
}

/// `[x, y, w, h]` of the set pixels (pycocotools' `toBbox` of the mask's RLE).
fn tight_box(mask: &Bitmap) -> [f64; 4] {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for y in 0..mask.height {
        for x in 0..mask.width {
            if mask.data[y * mask.width + x] != 0 {
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x);
                y1 = y1.max(y);
            }
        }
    }
    if x0 == usize::MAX {
        return [0.0; 4];
    }
    [x0 as f64, y0 as f64, (x1 - x0 + 1) as f64, (y1 - y0 + 1) as f64]
}

// ---- detection ----

/// One drawn layer: a shape, or a crowd of tiny shapes.
struct Layer {
    cat: usize,
    crowd: bool,
    /// The polygon of a single shape (`None` for a crowd).
    polygon: Option<Vec<f64>>,
    /// `(raster, colour)` of each painted part.
    parts: Vec<(Bitmap, [u8; 3])>,
    full_area: usize,
    /// The raster minus every later layer.
    visible: Bitmap,
}

/// Adds `layer` on top if no earlier layer would keep less than half (or under
/// [`MIN_VISIBLE`] pixels) of its raster visible; returns whether it was added.
fn try_add(layers: &mut Vec<Layer>, layer: Layer) -> bool {
    let top = &layer.visible;
    let ok = layers.iter().all(|l| {
        let left = l.visible.data.iter().zip(&top.data).filter(|&(&v, &t)| v != 0 && t == 0).count();
        left >= MIN_VISIBLE && 2 * left >= l.full_area
    });
    if ok {
        for l in layers.iter_mut() {
            for (v, &t) in l.visible.data.iter_mut().zip(&top.data) {
                if t != 0 {
                    *v = 0;
                }
            }
        }
        layers.push(layer);
    }
    ok
}

#[derive(Serialize)]
struct OutFile {
    images: Vec<OutImage>,
    annotations: Vec<OutAnn>,
    categories: Vec<OutCat>,
}

#[derive(Serialize)]
struct OutImage {
    id: u64,
    file_name: String,
    width: usize,
    height: usize,
}

#[derive(Serialize)]
struct OutCat {
    id: u64,
    name: &'static str,
    supercategory: &'static str,
}

#[derive(Serialize)]
struct OutAnn {
    id: u64,
    image_id: u64,
    category_id: u64,
    bbox: [f64; 4],
    area: f64,
    iscrowd: u8,
    segmentation: serde_json::Value,
}

/// A single random shape (the caller rejects one whose raster is too small).
fn random_shape(rng: &mut StdRng, w: usize, h: usize, bg: &[[u8; 3]; 2], path: &Path) -> Result<Layer, ShapesError> {
    let short = w.min(h) as f64;
    let cat = rng.gen_range(0..CATEGORIES.len());
    // Diameter log-uniform in 8%..60% of the short side: as many small as large objects.
    let d = short * (rng.gen_range(0.08f64.ln()..0.60f64.ln())).exp();
    let r = d / 2.0;
    let cx = rng.gen_range(r..w as f64 - r);
    let cy = rng.gen_range(r..h as f64 - r);
    let rot = rng.gen_range(0.0..std::f64::consts::TAU);
    let polygon = shape_polygon(cat, cx, cy, r, rot);
    let raster = rasterize(std::slice::from_ref(&polygon), w, h, path)?;
    let color = fill_color(rng, bg);
    Ok(Layer {
        cat,
        crowd: false,
        polygon: Some(polygon),
        full_area: raster.area(),
        visible: raster.clone(),
        parts: vec![(raster, color)],
    })
}

/// A cluster of 6..14 tiny shapes of one category, as one crowd layer.
fn random_crowd(rng: &mut StdRng, w: usize, h: usize, bg: &[[u8; 3]; 2], path: &Path) -> Result<Layer, ShapesError> {
    let short = w.min(h) as f64;
    let cat = rng.gen_range(0..CATEGORIES.len());
    let (bw, bh) = (short * rng.gen_range(0.25..0.4), short * rng.gen_range(0.25..0.4));
    let x0 = rng.gen_range(0.0..w as f64 - bw);
    let y0 = rng.gen_range(0.0..h as f64 - bh);
    let mut union = Bitmap::zeros(w, h);
    let mut parts = Vec::new();
    for _ in 0..rng.gen_range(6..=14) {
        let r = rng.gen_range(2.0..4.0);
        let cx = rng.gen_range(x0 + r..x0 + bw - r);
        let cy = rng.gen_range(y0 + r..y0 + bh - r);
        let poly = shape_polygon(cat, cx, cy, r, rng.gen_range(0.0..std::f64::consts::TAU));
        let raster = rasterize(&[poly], w, h, path)?;
        for (u, &m) in union.data.iter_mut().zip(&raster.data) {
            *u |= m;
        }
        parts.push((raster, fill_color(rng, bg)));
    }
    Ok(Layer { cat, crowd: true, polygon: None, full_area: union.area(), visible: union, parts })
}

/// Draws detection image `index` of a split and returns `(width, height, pixels, layers)`.
fn draw_detection_image(
    seed: u64,
    stream: u64,
    index: usize,
    path: &Path,
) -> Result<(usize, usize, Vec<u8>, Vec<Layer>), ShapesError> {
    let mut rng = image_rng(seed, stream, index);
    let w = rng.gen_range(DET_SIDE.0..=DET_SIDE.1);
    let h = rng.gen_range(DET_SIDE.0..=DET_SIDE.1);
    let (mut data, bg) = background(&mut rng, w, h);
    let mut layers = Vec::new();
    // 5% of images are background only; 20% hold a crowd.
    let n_objects = if rng.gen_bool(0.05) { 0 } else { rng.gen_range(1..=6) };
    if n_objects > 0 && rng.gen_bool(0.2) {
        let crowd = random_crowd(&mut rng, w, h, &bg, path)?;
        if crowd.full_area >= MIN_VISIBLE {
            try_add(&mut layers, crowd);
        }
    }
    let mut placed = 0;
    for _ in 0..n_objects * 10 {
        if placed == n_objects {
            break;
        }
        let shape = random_shape(&mut rng, w, h, &bg, path)?;
        if shape.full_area >= MIN_VISIBLE && try_add(&mut layers, shape) {
            placed += 1;
        }
    }
    for layer in &layers {
        for (raster, color) in &layer.parts {
            paint(&mut rng, &mut data, raster, *color);
        }
    }
    Ok((w, h, data, layers))
}

fn annotation(layer: &Layer, id: u64, image_id: u64) -> OutAnn {
    let visible = &layer.visible;
    let segmentation = if layer.crowd {
        serde_json::json!({ "size": [visible.height, visible.width], "counts": visible.to_rle().counts })
    } else {
        match &layer.polygon {
            Some(poly) if visible.area() == layer.full_area => serde_json::json!([poly]),
            _ => visible.to_rle().to_coco_json(),
        }
    };
    OutAnn {
        id,
        image_id,
        category_id: layer.cat as u64 + 1,
        bbox: tight_box(visible),
        area: visible.area() as f64,
        iscrowd: layer.crowd as u8,
        segmentation,
    }
}

fn create_dir(path: &Path) -> Result<(), ShapesError> {
    std::fs::create_dir_all(path).map_err(io_err(path))
}

/// Errors when `dir` exists and is not a folder, naming it (writing inside a file would fail
/// later with an error about a path below it).
fn check_not_a_file(dir: &Path) -> Result<(), ShapesError> {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(ShapesError::NotAFolder { path: dir.to_path_buf() }),
        _ => Ok(()),
    }
}

/// Checks that `dir` can receive a new dataset: it does not exist, or is an empty folder.
/// Errors name `dir`: [`ShapesError::NotAFolder`], [`ShapesError::NotEmpty`], or
/// [`ShapesError::Io`] when it cannot be listed.
pub fn check_new_dir(dir: &Path) -> Result<(), ShapesError> {
    check_not_a_file(dir)?;
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            Some(_) => Err(ShapesError::NotEmpty { path: dir.to_path_buf() }),
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ShapesError::Io { path: dir.to_path_buf(), source: e }),
    }
}

/// Writes one detection split; returns `(instances, crowds)`.
fn write_detection_split(
    dir: &Path,
    split: &str,
    n: usize,
    seed: u64,
    stream: u64,
) -> Result<(usize, usize), ShapesError> {
    let img_dir = dir.join(split);
    create_dir(&img_dir)?;
    let mut out = OutFile {
        images: Vec::with_capacity(n),
        annotations: Vec::new(),
        categories: CATEGORIES
            .iter()
            .enumerate()
            .map(|(i, &name)| OutCat { id: i as u64 + 1, name, supercategory: "shape" })
            .collect(),
    };
    let (mut instances, mut crowds) = (0, 0);
    for index in 0..n {
        let image_id = index as u64 + 1;
        let file_name = format!("{image_id:06}.png");
        let path = img_dir.join(&file_name);
        let (w, h, data, layers) = draw_detection_image(seed, stream, index, &path)?;
        write_png(&path, w, h, &data)?;
        out.images.push(OutImage { id: image_id, file_name, width: w, height: h });
        for layer in &layers {
            let id = out.annotations.len() as u64 + 1;
            out.annotations.push(annotation(layer, id, image_id));
            if layer.crowd {
                crowds += 1;
            } else {
                instances += 1;
            }
        }
    }
    let ann_dir = dir.join("annotations");
    create_dir(&ann_dir)?;
    let json_path = ann_dir.join(format!("instances_{split}.json"));
    let bytes = serde_json::to_vec(&out)
        .map_err(|e| ShapesError::Generate { path: json_path.clone(), reason: e.to_string() })?;
    std::fs::write(&json_path, bytes).map_err(io_err(&json_path))?;
    Ok((instances, crowds))
}

/// Writes the synthetic detection set under `dir`: `train/NNNNNN.png`, `val/NNNNNN.png` and
/// `annotations/instances_{train,val}.json` (COCO format, category ids 1..=5 in
/// [`CATEGORIES`] order, image ids from 1 in file-name order). Image sides are 160..=320 px.
/// A `dir` that exists and is not a folder is [`ShapesError::NotAFolder`], naming it.
pub fn make_detection(dir: &Path, n_train: usize, n_val: usize, seed: u64) -> Result<ShapesSummary, ShapesError> {
    check_not_a_file(dir)?;
    let (train_instances, train_crowds) = write_detection_split(dir, "train", n_train, seed, 1)?;
    let (val_instances, val_crowds) = write_detection_split(dir, "val", n_val, seed, 2)?;
    Ok(ShapesSummary {
        train_images: n_train,
        val_images: n_val,
        train_instances,
        val_instances,
        crowd_regions: train_crowds + val_crowds,
    })
}

// ---- classification ----

/// Writes the synthetic classification set as an `ImageFolder`:
/// `dir/{train,val}/{class}/NNNNNN.png`, one shape per image on a noisy background, square
/// images of 64..=96 px, the shape's diameter 50%..90% of the side; plus the
/// [`CLASSIFICATION_MARKER`] file holding [`CLASSIFICATION_VERSION`]. A `dir` that exists and is
/// not a folder is [`ShapesError::NotAFolder`], naming it.
pub fn make_classification(
    dir: &Path,
    n_train_per_class: usize,
    n_val_per_class: usize,
    seed: u64,
) -> Result<ShapesSummary, ShapesError> {
    check_not_a_file(dir)?;
    for (split, n, stream) in [("train", n_train_per_class, 3u64), ("val", n_val_per_class, 4)] {
        for (cat, class) in CATEGORIES.iter().enumerate() {
            let class_dir = dir.join(split).join(class);
            create_dir(&class_dir)?;
            for k in 0..n {
                let path = class_dir.join(format!("{:06}.png", k + 1));
                let mut rng = image_rng(seed, stream * 16 + cat as u64, k);
                let side = rng.gen_range(CLS_SIDE.0..=CLS_SIDE.1);
                let (w, h) = (side, side);
                let (mut data, bg) = background(&mut rng, w, h);
                let r = side as f64 * rng.gen_range(CLS_DIAMETER.0..CLS_DIAMETER.1) / 2.0;
                let cx = rng.gen_range(r..w as f64 - r);
                let cy = rng.gen_range(r..h as f64 - r);
                let poly = shape_polygon(cat, cx, cy, r, rng.gen_range(0.0..std::f64::consts::TAU));
                let raster = rasterize(&[poly], w, h, &path)?;
                let color = fill_color(&mut rng, &bg);
                paint(&mut rng, &mut data, &raster, color);
                write_png(&path, w, h, &data)?;
            }
        }
    }
    let marker = dir.join(CLASSIFICATION_MARKER);
    std::fs::write(&marker, format!("{CLASSIFICATION_VERSION}\n")).map_err(io_err(&marker))?;
    let k = CATEGORIES.len();
    Ok(ShapesSummary {
        train_images: k * n_train_per_class,
        val_images: k * n_val_per_class,
        train_instances: k * n_train_per_class,
        val_instances: k * n_val_per_class,
        crowd_regions: 0,
    })
}

// ---- generate once ----

/// Generates into a hidden sibling folder and renames it to `dir` when finished, so an
/// interrupted generation never looks like a finished one. `dir` must be absent or empty.
fn generate_atomically(
    dir: &Path,
    what: &str,
    make: impl FnOnce(&Path) -> Result<ShapesSummary, ShapesError>,
) -> Result<(), ShapesError> {
    check_not_a_file(dir)?;
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(io_err(dir))?;
        if entries.next().is_some() {
            return Err(ShapesError::Incomplete { dir: dir.to_path_buf(), reason: format!("no {what}") });
        }
        std::fs::remove_dir(dir).map_err(io_err(dir))?;
    }
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "shapes".into());
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_dir(&parent)?;
    let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    if let Err(e) = make(&tmp) {
        // Best effort: the error that matters is the generator's.
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, dir).map_err(io_err(dir))
}

/// Makes sure the default synthetic detection set exists in `dir`: generates it
/// ([`DEFAULT_DETECTION_TRAIN`] / [`DEFAULT_DETECTION_VAL`] images, [`DEFAULT_SEED`]) only if
/// `annotations/instances_{train,val}.json` are missing. Returns whether it generated.
pub fn ensure_detection(dir: &Path) -> Result<bool, ShapesError> {
    let anns = dir.join("annotations");
    if anns.join("instances_train.json").is_file() && anns.join("instances_val.json").is_file() {
        return Ok(false);
    }
    eprintln!(
        "generating the synthetic shapes detection set ({DEFAULT_DETECTION_TRAIN} train / \
         {DEFAULT_DETECTION_VAL} val images) in {}",
        dir.display()
    );
    generate_atomically(dir, "annotations/instances_{train,val}.json", |tmp| {
        make_detection(tmp, DEFAULT_DETECTION_TRAIN, DEFAULT_DETECTION_VAL, DEFAULT_SEED)
    })?;
    Ok(true)
}

/// Makes sure the default synthetic classification set exists in `dir`: generates it
/// ([`DEFAULT_CLASSIFICATION_TRAIN_PER_CLASS`] / [`DEFAULT_CLASSIFICATION_VAL_PER_CLASS`]
/// images per class, [`DEFAULT_SEED`]) only if a `{train,val}/{class}` folder is missing.
/// Returns whether it generated. A complete set whose [`CLASSIFICATION_MARKER`] is missing or
/// names another generator is an error, not reused: it was made by an earlier version.
pub fn ensure_classification(dir: &Path) -> Result<bool, ShapesError> {
    let complete =
        ["train", "val"].iter().all(|split| CATEGORIES.iter().all(|class| dir.join(split).join(class).is_dir()));
    if complete {
        let marker = dir.join(CLASSIFICATION_MARKER);
        return match std::fs::read_to_string(&marker) {
            Ok(text) if text.trim_end() == CLASSIFICATION_VERSION => Ok(false),
            _ => Err(ShapesError::Incomplete {
                dir: dir.to_path_buf(),
                reason: format!(
                    "made by an older generator: {} is missing or does not read \"{CLASSIFICATION_VERSION}\"",
                    marker.display()
                ),
            }),
        };
    }
    eprintln!(
        "generating the synthetic shapes classification set ({DEFAULT_CLASSIFICATION_TRAIN_PER_CLASS} train / \
         {DEFAULT_CLASSIFICATION_VAL_PER_CLASS} val images per class) in {}",
        dir.display()
    );
    generate_atomically(dir, "{train,val}/{class} folders", |tmp| {
        make_classification(
            tmp,
            DEFAULT_CLASSIFICATION_TRAIN_PER_CLASS,
            DEFAULT_CLASSIFICATION_VAL_PER_CLASS,
            DEFAULT_SEED,
        )
    })?;
    Ok(true)
}
