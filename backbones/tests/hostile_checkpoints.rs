//! Crafted checkpoints: every declared size is checked against the bytes in the file before
//! anything is allocated, a crafted pickle gets one error naming the file and the tensor (never
//! a panic, an abort or a stack overflow), `.pth` files torch wrote with every storage type and
//! non-contiguous views read as torch reads them, and non-finite weights are reported.

mod common;

use candle_core::{DType, Device, Tensor};
use common::fixture_path;
use nextdet_backbones::config::{BackboneConfig, ConvNeXtArch, ConvNeXtConfig};
use nextdet_backbones::weights::{
    describe_non_finite, load_checkpoint, non_finite_tensors, read_checkpoint, NonFinite, WeightsError,
};
use nextdet_backbones::{build_classifier, Classifier};
use nextdet_ops::ParamStore;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A zip archive of stored entries, as `torch.save` writes it.
fn write_zip(path: &Path, entries: &[(&str, &[u8])]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        zip.start_file(*name, options).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
}

/// A pickle integer, encoded as CPython's pickler encodes it (BININT1, BININT2, BININT, else
/// LONG1).
fn int(v: i64) -> Vec<u8> {
    if (0..256).contains(&v) {
        vec![b'K', v as u8]
    } else if (0..65536).contains(&v) {
        let mut out = vec![b'M'];
        out.extend_from_slice(&(v as u16).to_le_bytes());
        out
    } else if let Ok(v) = i32::try_from(v) {
        let mut out = vec![b'J'];
        out.extend_from_slice(&v.to_le_bytes());
        out
    } else {
        let mut out = vec![0x8a, 8];
        out.extend_from_slice(&v.to_le_bytes());
        out
    }
}

/// A pickle string (BINUNICODE).
fn string(s: &str) -> Vec<u8> {
    let mut out = vec![b'X'];
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    out
}

fn tuple(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![b'('];
    for i in items {
        out.extend_from_slice(i);
    }
    out.push(b't');
    out
}

/// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`, as
/// torch pickles a tensor, with the rebuild arguments given.
fn rebuild(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"ctorch._utils\n_rebuild_tensor_v2\n".to_vec();
    out.extend(tuple(args));
    out.push(b'R');
    out
}

/// The persistent id of float storage `0` declaring `numel` elements.
fn storage(numel: i64) -> Vec<u8> {
    let mut out =
        tuple(&[string("storage"), b"ctorch\nFloatStorage\n".to_vec(), string("0"), string("cpu"), int(numel)]);
    out.push(b'Q');
    out
}

/// The standard rebuild arguments of one float tensor.
fn tensor_args(numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> Vec<Vec<u8>> {
    let size = tuple(&size.iter().map(|&v| int(v)).collect::<Vec<_>>());
    let stride = tuple(&stride.iter().map(|&v| int(v)).collect::<Vec<_>>());
    vec![storage(numel), int(offset), size, stride, vec![0x89], b"ccollections\nOrderedDict\n)R".to_vec()]
}

/// A pickle of `{"w": <value>}`.
fn state_dict(value: Vec<u8>) -> Vec<u8> {
    let mut out = vec![0x80, 2, b'}', b'('];
    out.extend(string("w"));
    out.extend(value);
    out.extend_from_slice(b"u.");
    out
}

/// A `.pth` archive with `pickle` as `archive/data.pkl` and `data` as storage `0`.
fn pth(dir: &Path, name: &str, pickle: &[u8], data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    write_zip(&path, &[("archive/data.pkl", pickle), ("archive/data/0", data), ("archive/version", b"3\n")]);
    path
}

fn unreadable(path: &Path) -> String {
    match read_checkpoint(path) {
        Err(e @ WeightsError::Unreadable { .. }) => e.to_string(),
        Err(other) => panic!("{}: expected Unreadable, got {other:?}", path.display()),
        Ok(t) => panic!("{}: read {} tensors", path.display(), t.len()),
    }
}

#[test]
fn a_valid_handmade_archive_reads() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let path = pth(dir.path(), "ok.pth", &state_dict(rebuild(&tensor_args(4, 1, &[3], &[1]))), &data);
    let t = read_checkpoint(&path).unwrap();
    assert_eq!(t["w"].to_vec1::<f32>().unwrap(), vec![2.0, 3.0, 4.0]);
}

#[test]
fn declared_sizes_beyond_the_file_are_errors_not_allocations() {
    let dir = tempfile::tempdir().unwrap();
    let four = 1.0f32.to_le_bytes();
    // The issue's case: a ~700-byte file whose tensor declares 1e11 elements.
    let args = tensor_args(1, 0, &[100_000, 1_000_000], &[1_000_000, 1]);
    let path = pth(dir.path(), "huge.pth", &state_dict(rebuild(&args)), &four);
    assert!(std::fs::metadata(&path).unwrap().len() < 1000);
    let msg = unreadable(&path);
    assert!(msg.contains("huge.pth: cannot read checkpoint (tensor `w`: shape [100000, 1000000]"), "{msg}");
    assert!(
        msg.contains("need 400000000000 bytes of data within its storage `archive/data/0`, which holds 4 bytes"),
        "{msg}"
    );
    let args = tensor_args(1, 0, &[100_000_000_000], &[1]);
    let msg = unreadable(&pth(dir.path(), "huge_1d.pth", &state_dict(rebuild(&args)), &four));
    assert!(msg.contains("need 400000000000 bytes"), "{msg}");

    let cases: [(&str, Vec<Vec<u8>>, &str); 6] = [
        ("offset.pth", tensor_args(1, 5, &[1], &[1]), "and offset 5 need 4 bytes"),
        ("stride.pth", tensor_args(1, 0, &[2], &[3]), "stride [3] and offset 0 need 8 bytes"),
        ("broadcast.pth", tensor_args(1, 0, &[1_000_000, 1_000_000], &[0, 0]), "need 4000000000000 bytes"),
        ("overflow.pth", tensor_args(1, 0, &[1 << 40, 1 << 40], &[1, 1]), "need more bytes than can exist"),
        ("negative.pth", tensor_args(1, 0, &[-1], &[1]), "negative size, stride or offset"),
        (
            "numel.pth",
            tensor_args(100_000_000_000, 0, &[1], &[1]),
            "declares 100000000000 elements of 4 bytes, but holds 4",
        ),
    ];
    for (name, args, want) in cases {
        let path = pth(dir.path(), name, &state_dict(rebuild(&args)), &four);
        let msg = unreadable(&path);
        assert!(msg.contains(&format!("{name}: cannot read checkpoint (tensor `w`:")), "{msg}");
        assert!(msg.contains(want), "{name}: {msg}");
    }

    // A state dict repeating one big view many times cannot multiply the file's size.
    let data = vec![0u8; 4 << 20];
    let mut pickle = vec![0x80, 2, b'}', b'('];
    for i in 0..64 {
        pickle.extend(string(&format!("w{i}")));
        pickle.extend(rebuild(&tensor_args(1 << 20, 0, &[1 << 20], &[1])));
    }
    pickle.extend_from_slice(b"u.");
    let msg = unreadable(&pth(dir.path(), "repeated.pth", &pickle, &data));
    assert!(msg.contains("the tensors declare more data than the"), "{msg}");
}

#[test]
fn crafted_pickles_are_errors_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let four = 1.0f32.to_le_bytes();
    let mut deep = vec![0x80, 2, b')'];
    deep.extend(std::iter::repeat_n(0x85u8, 1_000_000));
    deep.push(b'.');
    let mut huge_string = vec![0x80, 2, b'X'];
    huge_string.extend_from_slice(&u32::MAX.to_le_bytes());
    huge_string.extend_from_slice(b"abc.");
    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "short_args.pth",
            state_dict(rebuild(&tensor_args(1, 0, &[1], &[1])[..2])),
            "tensor `w`: `_rebuild_tensor_v2` has fewer than 4 arguments",
        ),
        ("deep.pth", deep, "`archive/data.pkl`: values nested more than 256 levels deep"),
        ("huge_string.pth", huge_string, "needs 4294967295 bytes, only 4 are left"),
        ("no_stop.pth", vec![0x80, 2, b'}'], "the pickle ends without a STOP opcode"),
        ("exec.pth", b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echo\x85R.".to_vec(), "no tensors found in the archive"),
        ("bad_op.pth", b"\x80\x02\x82\x01.".to_vec(), "unsupported pickle opcode 0x82 at byte 2"),
    ];
    for (name, pickle, want) in cases {
        let msg = unreadable(&pth(dir.path(), name, &pickle, &four));
        assert!(msg.contains(name) && msg.contains(want), "{name}: {msg}");
    }

    // A tensor whose storage entry is missing names the entry.
    let path = dir.path().join("no_storage.pth");
    let pickle = state_dict(rebuild(&tensor_args(1, 0, &[1], &[1])));
    write_zip(&path, &[("archive/data.pkl", &pickle)]);
    let msg = unreadable(&path);
    assert!(msg.contains("entry `archive/data/0`"), "{msg}");

    // Not a regular file.
    let msg = unreadable(dir.path());
    assert!(msg.contains("not a regular file"), "{msg}");
}

/// A safetensors file from its JSON header and data.
fn safetensors(dir: &Path, name: &str, header: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn safetensors_headers_are_checked_against_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("huge.safetensors", r#"{"w":{"dtype":"F32","shape":[100000000000],"data_offsets":[0,400000000000]}}"#, 4),
        ("overflow.safetensors", r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#, 0),
        ("offsets.safetensors", r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, 8),
        ("mismatch.safetensors", r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,4]}}"#, 4),
        ("short.safetensors", r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 4),
        ("json.safetensors", r#"{"w":{"dtype":"F32","shape":[2],"#, 8),
    ];
    for (name, header, len) in cases {
        let msg = unreadable(&safetensors(dir.path(), name, header, &vec![0u8; len]));
        assert!(msg.contains(&format!("{name}: cannot read checkpoint (")), "{msg}");
    }
    // A header length beyond the file.
    let path = dir.path().join("header_len.safetensors");
    let mut bytes = (1u64 << 40).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"w\": 1}");
    std::fs::write(&path, bytes).unwrap();
    let msg = unreadable(&path);
    assert!(msg.contains("the safetensors header declares 1099511627776 bytes, but the file has 8"), "{msg}");
}

#[test]
fn torch_written_dtypes_and_views_read_as_torch_reads_them() {
    let got = read_checkpoint(&fixture_path("checkpoints/dtypes_views.pth")).unwrap();
    let expected =
        candle_core::safetensors::load(fixture_path("checkpoints/dtypes_views_expected.safetensors"), &Device::Cpu)
            .unwrap();
    let dtypes: HashMap<String, String> = serde_json_like(&fixture_path("checkpoints/dtypes_views_expected.json"));
    assert_eq!(got.len(), expected.len(), "{:?}", got.keys().collect::<Vec<_>>());
    for (name, want) in &expected {
        let t = &got[name];
        assert_eq!(t.dims(), want.dims(), "{name}");
        assert_eq!(format!("{:?}", t.dtype()).to_lowercase(), dtypes[name], "{name}");
        let a = t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let b = want.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(a, b, "{name}");
    }
    // Every published-layout fixture reads to the same tensors as candle's own reader.
    for file in [
        "convnext_tiny_official.pth",
        "convnext_tiny_timm.pth",
        "convnext_tiny_mmdet.pth",
        "convnext_isotropic_small_official.pth",
    ] {
        let path = fixture_path(&format!("checkpoints/{file}"));
        let ours = read_checkpoint(&path).unwrap();
        let key = ["state_dict", "model"]
            .into_iter()
            .find(|k| candle_core::pickle::read_all_with_key(&path, Some(k)).is_ok());
        let theirs: HashMap<String, Tensor> =
            candle_core::pickle::read_all_with_key(&path, key).unwrap().into_iter().collect();
        assert_eq!(ours.len(), theirs.len(), "{file}");
        for (name, t) in &theirs {
            let a = ours[name].to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let b = t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            assert_eq!(ours[name].dims(), t.dims(), "{file} {name}");
            assert_eq!(a, b, "{file} {name}");
        }
    }
}

/// A flat JSON object of strings (the expected dtypes), read without a JSON dependency.
fn serde_json_like(path: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.split(',')
        .filter_map(|pair| {
            let parts: Vec<&str> = pair.split('"').collect();
            (parts.len() >= 4).then(|| (parts[1].to_string(), parts[3].to_string()))
        })
        .collect()
}

fn reduced_tiny() -> BackboneConfig {
    BackboneConfig::ConvNeXt(ConvNeXtConfig {
        arch: Some(ConvNeXtArch::Tiny),
        depths: Some(vec![3, 3, 9, 3]),
        dims: Some(vec![4, 8, 8, 16]),
        in_chans: 3,
        drop_path_rate: 0.0,
        layer_scale_init_value: 1.0,
        out_indices: vec![0, 1, 2, 3],
    })
}

#[test]
fn non_finite_weights_are_listed_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = read_checkpoint(&fixture_path("checkpoints/convnext_tiny_timm.safetensors")).unwrap();
    let clean = load(&tensors, dir.path(), "clean.safetensors");
    assert!(clean.is_empty(), "{clean:?}");
    let poison = |t: &Tensor, v: f32| {
        let mut x = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        x[0] = v;
        let last = x.len() - 1;
        x[last] = v;
        Tensor::from_vec(x, t.dims(), &Device::Cpu).unwrap()
    };
    let stem = "stem.0.weight".to_string();
    let head = "head.fc.bias".to_string();
    tensors.insert(stem.clone(), poison(&tensors[&stem], f32::NAN));
    tensors.insert(head.clone(), poison(&tensors[&head], f32::NEG_INFINITY));
    let found = load(&tensors, dir.path(), "poisoned.safetensors");
    let stem_len = tensors[&stem].elem_count();
    assert_eq!(
        found,
        vec![
            NonFinite { name: "downsample_layers.0.0.weight".into(), count: 2, len: stem_len },
            NonFinite { name: "head.bias".into(), count: 2, len: 10 },
        ]
    );
    assert_eq!(
        describe_non_finite(&found),
        format!("2 tensors hold NaN or infinite values: downsample_layers.0.0.weight (2 of {stem_len}), head.bias (2 of 10)")
    );
    // Other float types, non-contiguous views and integer tensors.
    let f64s = Tensor::new(&[1.0f64, f64::INFINITY], &Device::Cpu).unwrap();
    let f16s = Tensor::new(&[1.0f32, f32::NAN, 2.0], &Device::Cpu).unwrap().to_dtype(DType::F16).unwrap();
    let view = Tensor::new(&[[1.0f32, f32::NAN], [3.0, 4.0]], &Device::Cpu).unwrap().t().unwrap();
    let ints = Tensor::new(&[1i64, 2], &Device::Cpu).unwrap();
    let named: HashMap<String, Tensor> =
        [("a", f64s), ("b", f16s), ("c", view), ("d", ints)].into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let counts: Vec<(String, usize)> = non_finite_tensors(&named).into_iter().map(|f| (f.name, f.count)).collect();
    assert_eq!(counts, vec![("a".into(), 1), ("b".into(), 1), ("c".into(), 1)]);
}

/// Writes `tensors` as a safetensors checkpoint, loads it into the reduced ConvNeXt-T and returns
/// what the load reports as non-finite.
fn load(tensors: &HashMap<String, Tensor>, dir: &Path, name: &str) -> Vec<NonFinite> {
    let path = dir.join(name);
    candle_core::safetensors::save(tensors, &path).unwrap();
    let store = ParamStore::new(&Device::Cpu, 0);
    let _net = build_classifier(&reduced_tiny(), 10, &store.root(), 0).unwrap();
    load_checkpoint(&store, &path, true).unwrap().non_finite
}

#[test]
fn in_chans_that_do_not_fit_the_images_say_so() {
    let mut cfg = reduced_tiny();
    if let BackboneConfig::ConvNeXt(c) = &mut cfg {
        c.in_chans = 1;
    }
    let store = ParamStore::new(&Device::Cpu, 0);
    let net: Box<dyn Classifier> = build_classifier(&cfg, 10, &store.root(), 0).unwrap();
    let images = Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let err = net.forward(&images, false).unwrap_err().to_string();
    assert!(
        err.contains(
            "the images have 3 channels, but the backbone's stem takes 1 (`in_chans: 1`, stem weight [4, 1, 4, 4])"
        ),
        "{err}"
    );
    // Loading a 3-channel checkpoint names the tensor and both shapes.
    let err = load_checkpoint(&store, &fixture_path("checkpoints/convnext_tiny_official.pth"), true).unwrap_err();
    assert!(
        err.to_string().contains("downsample_layers.0.0.weight: model [4, 1, 4, 4] vs checkpoint [4, 3, 4, 4]"),
        "{err}"
    );
}
