//! COCO ground truth and results files, accepted or refused as pycocotools accepts or refuses
//! them, with one clear message instead of a traceback.
//!
//! What pycocotools requires (pycocotools `coco.py` `COCO.__init__`, `createIndex`, `loadRes`,
//! `annToRLE`; `cocoeval.py` `COCOeval._prepare`, `computeIoU`, `evaluateImg`):
//!
//! - the ground truth is a JSON object; every image, category and annotation has an `id`, every
//!   annotation an `image_id` and a `category_id`; every annotation that is evaluated (its image
//!   and category are in the file) has an `area`, a `bbox` for box evaluation, and a
//!   `segmentation` on an image with `height` and `width` for mask evaluation;
//! - the results are a JSON array of objects, each with an `image_id` of a ground-truth image and
//!   a `category_id`; the first result decides their kind: with a non-empty `bbox` every result
//!   needs a `bbox`, else with a `segmentation` every result needs one as compressed RLE
//!   (`maskUtils.area` takes nothing else), and results with neither cannot be indexed; every
//!   result of a ground-truth category needs a numeric `score`.
//!
//! Two deviations, both refusals of input whose numbers would mean nothing: a NaN score (written
//! `NaN` in the file) is refused where pycocotools ranks it arbitrarily, and ids must be
//! non-negative integers where pycocotools would take any hashable. An empty results list is
//! evaluated (every category scores 0) where pycocotools' `loadRes` fails on `anns[0]`.
//!
//! Duplicate annotation ids in the ground truth are evaluated as pycocotools evaluates them:
//! `createIndex` keeps every annotation in its image's list but only the last one of an id in
//! `anns`, and `COCOeval._prepare` loads the listed ids through `anns`, so every annotation
//! whose id is repeated is replaced by the last annotation with that id, which is then counted
//! once per occurrence, in its own image.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::coco::{EvalError, IouType};

/// The file's bytes with the non-finite number tokens Python's `json.dump` writes (`NaN`,
/// `Infinity`, `-Infinity`) turned into `null`, as pycocotools' `json.load` reads them as
/// numbers and serde_json does not read them at all.
fn read_json(path: &Path) -> std::io::Result<Vec<u8>> {
    let bytes = std::fs::read(path)?;
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let mut in_string = false;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            out.push(b);
            if b == b'\\' && i + 1 < bytes.len() {
                out.push(bytes[i + 1]);
                i += 1;
            } else if b == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
        }
        let token = [&b"-Infinity"[..], b"Infinity", b"NaN"].into_iter().find(|t| bytes[i..].starts_with(t));
        match token {
            Some(t) => {
                out.extend_from_slice(b"null");
                i += t.len();
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The first byte that is not JSON white space.
fn first_token(bytes: &[u8]) -> Option<u8> {
    bytes.iter().copied().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

/// A COCO id as hotcoco reads it: a non-negative integer, or a float with an integral value.
fn id_of(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => {
            n.as_u64().or_else(|| n.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0).map(|f| f as u64))
        }
        _ => None,
    }
}

/// What the checks need of a ground-truth image.
#[derive(Deserialize)]
struct GtImage {
    id: Option<Value>,
    height: Option<IgnoredAny>,
    width: Option<IgnoredAny>,
}

/// What the checks need of a category.
#[derive(Deserialize)]
struct GtCategory {
    id: Option<Value>,
}

/// What the checks need of a ground-truth annotation.
#[derive(Deserialize)]
struct GtAnnotation {
    id: Option<Value>,
    image_id: Option<Value>,
    category_id: Option<Value>,
    bbox: Option<IgnoredAny>,
    segmentation: Option<IgnoredAny>,
    area: Option<IgnoredAny>,
}

/// The parts of a ground-truth file the checks read.
#[derive(Deserialize)]
struct GtFile {
    images: Option<Vec<GtImage>>,
    annotations: Option<Vec<GtAnnotation>>,
    categories: Option<Vec<GtCategory>>,
}

/// A ground truth that pycocotools would evaluate, loaded for hotcoco.
pub(crate) struct GroundTruth {
    /// The dataset, with duplicate annotation ids resolved as pycocotools resolves them.
    pub coco: hotcoco::COCO,
    /// The image ids.
    pub images: HashSet<u64>,
    /// The category ids.
    pub categories: HashSet<u64>,
}

/// Loads the ground truth at `path` for evaluating `iou_types`, refusing what pycocotools
/// refuses (see the module docs).
pub(crate) fn load_ground_truth(path: &Path, iou_types: &[IouType]) -> Result<GroundTruth, EvalError> {
    let bad = |reason: String| EvalError::InvalidGroundTruth { path: path.to_path_buf(), reason };
    let io = |e: std::io::Error| EvalError::GroundTruth {
        path: path.to_path_buf(),
        source: hotcoco::Error::InvalidInput(format!("cannot read it: {e}")),
    };
    let bytes = read_json(path).map_err(io)?;
    if first_token(&bytes) != Some(b'{') {
        return Err(bad(
            "the ground truth must be a JSON object (pycocotools: annotation file format not supported)".into()
        ));
    }
    let parse = |e: serde_json::Error| EvalError::GroundTruth {
        path: path.to_path_buf(),
        source: hotcoco::Error::InvalidInput(e.to_string()),
    };
    let file: GtFile = serde_json::from_slice(&bytes).map_err(parse)?;

    let ids = |what: &str, items: Vec<Option<Value>>| -> Result<Vec<u64>, EvalError> {
        items
            .into_iter()
            .enumerate()
            .map(|(i, id)| match id {
                None => Err(bad(format!("{what} {i} has no `id`"))),
                Some(v) => id_of(&v).ok_or_else(|| bad(format!("{what} {i} has id {v}, not a non-negative integer"))),
            })
            .collect()
    };
    let images_list = file.images.unwrap_or_default();
    let image_ids = ids("image", images_list.iter().map(|im| im.id.clone()).collect())?;
    let sized: HashSet<u64> = image_ids
        .iter()
        .zip(&images_list)
        .filter(|(_, im)| im.height.is_some() && im.width.is_some())
        .map(|(&id, _)| id)
        .collect();
    let has_categories = file.categories.is_some();
    let category_ids = ids("category", file.categories.unwrap_or_default().into_iter().map(|c| c.id).collect())?;
    let images: HashSet<u64> = image_ids.iter().copied().collect();
    let categories: HashSet<u64> = category_ids.iter().copied().collect();

    // (id, image_id, category_id) of every annotation, checked as createIndex reads them.
    let anns = file.annotations.unwrap_or_default();
    let mut keys = Vec::with_capacity(anns.len());
    for (i, ann) in anns.iter().enumerate() {
        let field = |name: &str, v: &Option<Value>| match v {
            None => Err(bad(format!("annotation {i} has no `{name}`"))),
            Some(v) => {
                id_of(v).ok_or_else(|| bad(format!("annotation {i} has {name} {v}, not a non-negative integer")))
            }
        };
        let id = field("id", &ann.id)?;
        let image = field("image_id", &ann.image_id)?;
        let category =
            if has_categories || ann.category_id.is_some() { field("category_id", &ann.category_id)? } else { 0 };
        keys.push((id, image, category));
    }
    // `anns[id]` keeps the last annotation of each id.
    let mut last: HashMap<u64, usize> = HashMap::with_capacity(keys.len());
    for (i, &(id, _, _)) in keys.iter().enumerate() {
        last.insert(id, i);
    }
    // What COCOeval loads: for each annotation of an evaluated image and category, in image-id
    // order, the last annotation with its id.
    let mut listed: Vec<usize> =
        (0..keys.len()).filter(|&i| images.contains(&keys[i].1) && categories.contains(&keys[i].2)).collect();
    listed.sort_by_key(|&i| keys[i].1);
    for &i in &listed {
        let j = last[&keys[i].0];
        let ann = &anns[j];
        let (id, image, _) = keys[j];
        let missing = |what: &str| {
            bad(format!("annotation {j} (id {id}, image {image}) has no `{what}`, which pycocotools' COCOeval reads"))
        };
        if ann.area.is_none() {
            return Err(missing("area"));
        }
        if iou_types.contains(&IouType::Bbox) && ann.bbox.is_none() {
            return Err(missing("bbox"));
        }
        if iou_types.contains(&IouType::Segm) {
            if ann.segmentation.is_none() {
                return Err(missing("segmentation"));
            }
            if !sized.contains(&image) {
                return Err(bad(format!(
                    "annotation {j} (id {id}) is on image {image}, which has no `height` and `width` in the file; \
                     pycocotools needs them to decode its mask"
                )));
            }
        }
    }

    let mut dataset: hotcoco::Dataset = serde_json::from_slice(&bytes).map_err(parse)?;
    drop(bytes);
    if last.len() < keys.len() {
        // Duplicate ids: replace each listed annotation by the last one of its id. Repeats get
        // fresh ids above every id in the file, so that hotcoco sees distinct annotations.
        let mut next = keys.iter().map(|k| k.0).max().unwrap_or(0) + 1;
        let mut used = HashSet::new();
        let loaded: Vec<hotcoco::Annotation> = listed
            .iter()
            .map(|&i| {
                let j = last[&keys[i].0];
                let mut ann = dataset.annotations[j].clone();
                if !used.insert(j) {
                    ann.id = next;
                    next += 1;
                }
                ann
            })
            .collect();
        dataset.annotations = loaded;
    }
    Ok(GroundTruth { coco: hotcoco::COCO::from_dataset(dataset), images, categories })
}

/// The kind of a result's `segmentation`.
#[derive(Debug, PartialEq)]
enum SegKind {
    /// An object with `size` and a string `counts`: the only form pycocotools' `loadRes` takes
    /// when it derives areas from masks.
    CompressedRle,
    /// Anything else (polygons, uncompressed RLE, ...).
    Other,
}

impl<'de> Deserialize<'de> for SegKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SegKind;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a segmentation")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SegKind, A::Error> {
                let (mut size, mut counts) = (false, false);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "size" => {
                            size = true;
                            map.next_value::<IgnoredAny>()?;
                        }
                        "counts" => counts = map.next_value::<Value>()?.is_string(),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(if size && counts { SegKind::CompressedRle } else { SegKind::Other })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SegKind, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(SegKind::Other)
            }
            fn visit_unit<E>(self) -> Result<SegKind, E> {
                Ok(SegKind::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<SegKind, E> {
                Ok(SegKind::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<SegKind, E> {
                Ok(SegKind::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<SegKind, E> {
                Ok(SegKind::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<SegKind, E> {
                Ok(SegKind::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<SegKind, E> {
                Ok(SegKind::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// What the checks need of a result.
#[derive(Deserialize)]
struct Result_ {
    image_id: Option<Value>,
    category_id: Option<Value>,
    bbox: Option<Value>,
    segmentation: Option<SegKind>,
    score: Option<Value>,
    caption: Option<IgnoredAny>,
    keypoints: Option<IgnoredAny>,
}

/// Loads the results at `path` against `gt`, refusing what pycocotools refuses (see the module
/// docs).
pub(crate) fn load_results(gt: &GroundTruth, path: &Path) -> Result<hotcoco::COCO, EvalError> {
    let bad = |reason: String| EvalError::InvalidResults { path: path.to_path_buf(), reason };
    let other = |message: String| EvalError::Results {
        path: path.to_path_buf(),
        source: hotcoco::Error::InvalidInput(message),
    };
    let bytes = read_json(path).map_err(|e| other(format!("cannot read it: {e}")))?;
    if first_token(&bytes) != Some(b'[') {
        return Err(bad(
            "the results must be a JSON array of detections (pycocotools' loadRes: results in not an array of objects)"
                .into(),
        ));
    }
    let results: Vec<Result_> = serde_json::from_slice(&bytes).map_err(|e| other(e.to_string()))?;
    let Some(first) = results.first() else {
        return gt
            .coco
            .load_res_anns(Vec::new())
            .map_err(|source| EvalError::Results { path: path.to_path_buf(), source });
    };
    enum Kind {
        Bbox,
        Segm,
    }
    let kind = if first.caption.is_some() {
        return Err(bad("the results are captions, not detections".into()));
    } else if first.bbox.as_ref().is_some_and(|b| !matches!(b, Value::Array(a) if a.is_empty())) {
        Kind::Bbox
    } else if first.segmentation.is_some() {
        Kind::Segm
    } else if first.keypoints.is_some() {
        return Err(bad("keypoint results are not supported".into()));
    } else {
        return Err(bad(
            "the first detection has neither a `bbox` nor a `segmentation`, so pycocotools cannot index the results"
                .into(),
        ));
    };
    for (i, r) in results.iter().enumerate() {
        let image = match &r.image_id {
            None => return Err(bad(format!("detection {i} has no `image_id`"))),
            Some(v) => {
                id_of(v).ok_or_else(|| bad(format!("detection {i} has image_id {v}, not a non-negative integer")))?
            }
        };
        if !gt.images.contains(&image) {
            return Err(bad(format!(
                "detection {i} is on image {image}, which is not in the ground truth (pycocotools: Results do not \
                 correspond to current coco set)"
            )));
        }
        let category = match &r.category_id {
            None => return Err(bad(format!("detection {i} has no `category_id`"))),
            Some(v) => {
                id_of(v).ok_or_else(|| bad(format!("detection {i} has category_id {v}, not a non-negative integer")))?
            }
        };
        match kind {
            Kind::Bbox => match &r.bbox {
                None => return Err(bad(format!("detection {i} has no `bbox` (the first detection has one, so every detection needs one)"))),
                Some(Value::Array(b)) if b.len() == 4 && b.iter().all(Value::is_number) => {}
                Some(v) => return Err(bad(format!("detection {i} has bbox {v}, not 4 numbers [x, y, w, h]"))),
            },
            Kind::Segm => match &r.segmentation {
                None => {
                    return Err(bad(format!(
                        "detection {i} has no `segmentation` (the first detection has one and no `bbox`, so every detection needs one)"
                    )))
                }
                Some(SegKind::Other) => {
                    return Err(bad(format!(
                        "detection {i}: a `segmentation` without a `bbox` must be compressed RLE ({{\"size\": [h, w], \
                         \"counts\": \"...\"}}), as pycocotools' loadRes computes its area with maskUtils.area"
                    )))
                }
                Some(SegKind::CompressedRle) => {}
            },
        }
        if gt.categories.contains(&category) {
            match &r.score {
                Some(Value::Number(_)) => {}
                None => {
                    return Err(bad(format!(
                        "detection {i} (image {image}, category {category}) has no `score`, which pycocotools' COCOeval ranks \
                         detections by"
                    )))
                }
                Some(v) => {
                    let v = if v.is_null() { "null or NaN".to_string() } else { v.to_string() };
                    return Err(bad(format!("detection {i} (image {image}, category {category}) has score {v}, not a number")));
                }
            }
        }
    }
    drop(results);
    let anns: Vec<hotcoco::Annotation> = serde_json::from_slice(&bytes).map_err(|e| other(e.to_string()))?;
    gt.coco.load_res_anns(anns).map_err(|source| EvalError::Results { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_tokens_become_null_outside_strings() {
        let dir = std::env::temp_dir().join(format!("nextdet-coco-input-{}", std::process::id()));
        std::fs::write(&dir, br#"[NaN, -Infinity, Infinity, "NaN \" Infinity", 1]"#).unwrap();
        let text = String::from_utf8(read_json(&dir).unwrap()).unwrap();
        std::fs::remove_file(&dir).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v, serde_json::json!([null, null, null, "NaN \" Infinity", 1]));
    }
}
