//! The JSON structure of a COCO annotation file, as serde reads it: only the fields the dataset
//! uses, with pycocotools' leniency where real files need it (Python-truthy flags, polygons or
//! RLE segmentations, compressed or list counts).

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

#[derive(Deserialize)]
pub(crate) struct RawFile {
    pub(crate) images: Vec<RawImage>,
    #[serde(default)]
    pub(crate) annotations: Vec<RawAnn>,
    pub(crate) categories: Vec<RawCategory>,
}

#[derive(Deserialize)]
pub(crate) struct RawImage {
    pub(crate) id: u64,
    pub(crate) file_name: String,
    pub(crate) width: usize,
    pub(crate) height: usize,
}

#[derive(Deserialize)]
pub(crate) struct RawCategory {
    pub(crate) id: u64,
    pub(crate) name: String,
}

#[derive(Deserialize)]
pub(crate) struct RawAnn {
    pub(crate) id: u64,
    pub(crate) image_id: u64,
    pub(crate) category_id: u64,
    pub(crate) bbox: Vec<f64>,
    pub(crate) area: Option<f64>,
    #[serde(default, deserialize_with = "flag")]
    pub(crate) iscrowd: bool,
    #[serde(default, deserialize_with = "flag")]
    pub(crate) ignore: bool,
    pub(crate) segmentation: Option<RawSegm>,
}

pub(crate) enum RawSegm {
    /// Polygons `[x0, y0, x1, y1, ...]`.
    Polygons(Vec<Vec<f64>>),
    /// `{size: [h, w], counts}`.
    Rle { size: Vec<u64>, counts: RawCounts },
}

pub(crate) enum RawCounts {
    /// Uncompressed run lengths.
    List(Vec<i64>),
    /// pycocotools' compressed string.
    Str(String),
}

/// A Python-truthy flag: `true`/`false`, a number (non-zero is true) or `null`.
fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a boolean or a number")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
            Ok(v != 0)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
            Ok(v != 0)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
            Ok(v != 0.0)
        }
        fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
    }
    d.deserialize_any(V)
}

impl<'de> Deserialize<'de> for RawSegm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawSegm;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a segmentation: a list of polygons or an RLE object {size, counts}")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawSegm, A::Error> {
                let mut polys = Vec::new();
                while let Some(p) = seq.next_element::<Vec<f64>>()? {
                    polys.push(p);
                }
                Ok(RawSegm::Polygons(polys))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawSegm, A::Error> {
                let (mut size, mut counts) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "size" => size = Some(map.next_value::<Vec<u64>>()?),
                        "counts" => counts = Some(map.next_value::<RawCounts>()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let size = size.ok_or_else(|| de::Error::missing_field("size"))?;
                let counts = counts.ok_or_else(|| de::Error::missing_field("counts"))?;
                Ok(RawSegm::Rle { size, counts })
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawCounts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawCounts;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("RLE counts: a list of integers or a compressed string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawCounts, E> {
                Ok(RawCounts::Str(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawCounts, A::Error> {
                let mut v = Vec::new();
                while let Some(c) = seq.next_element::<i64>()? {
                    v.push(c);
                }
                Ok(RawCounts::List(v))
            }
        }
        d.deserialize_any(V)
    }
}
