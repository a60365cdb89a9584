//! PyTorch `.pth` zip archives, read without trusting them.
//!
//! `torch.save` writes a zip archive whose `<name>/data.pkl` is a pickle of the saved object;
//! each tensor in it is a call to `torch._utils._rebuild_tensor_v2(storage, offset, size,
//! stride, ...)` whose storage is a persistent id `('storage', <storage class>, key, location,
//! numel)` naming the stored (uncompressed) entry `<name>/data/<key>` (torch
//! `serialization.py`, `_save` and `_load`).
//!
//! The pickle is run by a small interpreter of the opcodes the standard pickler emits
//! (CPython `Lib/pickle.py`), which never imports or calls anything: a global is a name, a call
//! to a function other than the tensor, parameter and `OrderedDict` rebuilders is an opaque
//! value. Everything it allocates is bounded by the bytes actually in the file before it is
//! allocated: the pickle's size, each string's length, the nesting depth (so dropping the
//! result cannot overflow the stack), the copies that sharing through the memo may force, and
//! each tensor's declared shape, stride, offset and element type against its storage entry's
//! size. A crafted file gets one error naming the file's part and the tensor, never an abort.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::rc::Rc;

/// Largest `data.pkl` read (the pickle of a state dict takes about 150 bytes per tensor).
pub(crate) const MAX_PICKLE_BYTES: u64 = 16 << 20;

/// Deepest nesting of tuples, lists and dicts in the pickle.
const MAX_NESTING: usize = 256;

/// The element types of torch storages, as named by the storage class or a `torch.<dtype>`
/// global.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Elem {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    U16,
    U32,
    Bool,
    /// A type with no candle counterpart (complex, quantized, 8-bit floats): such tensors are
    /// left out, as candle's own reader leaves them out.
    Unsupported(usize),
}

impl Elem {
    fn size(self) -> usize {
        match self {
            Elem::F64 | Elem::I64 => 8,
            Elem::F32 | Elem::I32 | Elem::U32 => 4,
            Elem::F16 | Elem::BF16 | Elem::I16 | Elem::U16 => 2,
            Elem::I8 | Elem::U8 | Elem::Bool => 1,
            Elem::Unsupported(size) => size,
        }
    }

    /// From a legacy storage class name (`FloatStorage`) or `UntypedStorage` (bytes).
    fn of_storage(module: &str, name: &str) -> Option<Elem> {
        if !matches!(module, "torch" | "torch.cuda" | "torch.storage") {
            return None;
        }
        Some(match name {
            "DoubleStorage" => Elem::F64,
            "FloatStorage" => Elem::F32,
            "HalfStorage" => Elem::F16,
            "BFloat16Storage" => Elem::BF16,
            "LongStorage" => Elem::I64,
            "IntStorage" => Elem::I32,
            "ShortStorage" => Elem::I16,
            "CharStorage" => Elem::I8,
            "ByteStorage" | "UntypedStorage" => Elem::U8,
            "BoolStorage" => Elem::Bool,
            "ComplexFloatStorage" => Elem::Unsupported(8),
            "ComplexDoubleStorage" => Elem::Unsupported(16),
            "QInt8Storage" | "QUInt8Storage" | "QUInt4x2Storage" | "QUInt2x4Storage" => Elem::Unsupported(1),
            "QInt32Storage" => Elem::Unsupported(4),
            _ => return None,
        })
    }

    /// From a `torch.<dtype>` global (`_rebuild_tensor_v3`'s dtype argument).
    fn of_dtype(module: &str, name: &str) -> Option<Elem> {
        if module != "torch" {
            return None;
        }
        Some(match name {
            "float64" | "double" => Elem::F64,
            "float32" | "float" => Elem::F32,
            "float16" | "half" => Elem::F16,
            "bfloat16" => Elem::BF16,
            "int64" | "long" => Elem::I64,
            "int32" | "int" => Elem::I32,
            "int16" | "short" => Elem::I16,
            "int8" => Elem::I8,
            "uint8" => Elem::U8,
            "uint16" => Elem::U16,
            "uint32" => Elem::U32,
            "bool" => Elem::Bool,
            "uint64" | "complex64" | "cfloat" => Elem::Unsupported(8),
            "complex128" | "cdouble" => Elem::Unsupported(16),
            "complex32" | "chalf" => Elem::Unsupported(4),
            "float8_e4m3fn" | "float8_e5m2" | "float8_e4m3fnuz" | "float8_e5m2fnuz" => Elem::Unsupported(1),
            _ => return None,
        })
    }

    /// The candle type a tensor of this element type is loaded as, with the bytes widened where
    /// candle has no exact type (int8 to int16, bool to uint8, uint16 to uint32); `None` for an
    /// unsupported type.
    fn candle(self) -> Option<DType> {
        Some(match self {
            Elem::F64 => DType::F64,
            Elem::F32 => DType::F32,
            Elem::F16 => DType::F16,
            Elem::BF16 => DType::BF16,
            Elem::I64 => DType::I64,
            Elem::I32 => DType::I32,
            Elem::I16 | Elem::I8 => DType::I16,
            Elem::U8 | Elem::Bool => DType::U8,
            Elem::U16 | Elem::U32 => DType::U32,
            Elem::Unsupported(_) => return None,
        })
    }
}

/// A storage named by a persistent id.
#[derive(Debug)]
struct StorageRef {
    key: String,
    elem: Elem,
    /// The element count the pickle declares (bytes for `UntypedStorage`).
    numel: i64,
}

/// A tensor the pickle rebuilds: a view into a storage.
#[derive(Debug)]
struct TensorRef {
    storage: Rc<StorageRef>,
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
    /// `_rebuild_tensor_v3`'s dtype, which overrides the storage's (untyped) one.
    elem: Option<Elem>,
}

/// A container's items and its nesting depth (1 + the deepest item's).
#[derive(Clone, Debug)]
struct Node<T> {
    depth: usize,
    items: Vec<T>,
}

/// A value on the pickle machine's stack.
#[derive(Clone, Debug)]
enum Obj {
    None,
    Bool(bool),
    Int(i64),
    Str(Rc<str>),
    Tuple(Rc<Node<Obj>>),
    List(Rc<Node<Obj>>),
    Dict(Rc<Node<(Obj, Obj)>>),
    Global(Rc<(String, String)>),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
    /// A call to `_rebuild_tensor*` whose arguments are not a tensor's: an error if it is one
    /// of the state dict's values.
    BadTensor(Rc<str>),
    /// Anything else: floats, bytes, big integers, sets, objects of other classes.
    Opaque,
}

impl Obj {
    fn depth(&self) -> usize {
        match self {
            Obj::Tuple(n) | Obj::List(n) => n.depth,
            Obj::Dict(n) => n.depth,
            _ => 0,
        }
    }

    fn int(&self) -> Option<i64> {
        match self {
            Obj::Int(v) => Some(*v),
            Obj::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    fn ints(&self) -> Option<Vec<i64>> {
        match self {
            Obj::Tuple(n) | Obj::List(n) => n.items.iter().map(Obj::int).collect(),
            _ => None,
        }
    }

    fn global(&self) -> Option<(&str, &str)> {
        match self {
            Obj::Global(g) => Some((g.0.as_str(), g.1.as_str())),
            _ => None,
        }
    }
}

/// The pickle machine: CPython's `_Unpickler` state, with the bounds described in the module
/// docs.
struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Obj>,
    marks: Vec<usize>,
    memo: HashMap<u64, Obj>,
    /// Items copied because a shared container was modified; bounded by `copy_budget`.
    copied: usize,
    copy_budget: usize,
}

type PResult<T> = Result<T, String>;

impl<'a> Machine<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            copied: 0,
            copy_budget: 4 * data.len() + 4096,
        }
    }

    fn take(&mut self, n: u64) -> PResult<&'a [u8]> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(format!("an opcode at byte {} needs {n} bytes, only {left} are left", self.pos));
        }
        let s = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn u8(&mut self) -> PResult<u8> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> PResult<[u8; N]> {
        Ok(self.take(N as u64)?.try_into().expect("N bytes"))
    }

    fn line(&mut self) -> PResult<&'a str> {
        let rest = &self.data[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or("a text opcode's line has no end")?;
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).map_err(|_| "a text opcode's line is not UTF-8".to_string())
    }

    fn push(&mut self, obj: Obj) {
        self.stack.push(obj);
    }

    fn pop(&mut self) -> PResult<Obj> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("the pickle pops more values than it pushed".into());
        }
        Ok(self.stack.pop().expect("checked non-empty"))
    }

    fn top(&mut self) -> PResult<&mut Obj> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("the pickle uses a value it did not push".into());
        }
        Ok(self.stack.last_mut().expect("checked non-empty"))
    }

    fn pop_mark(&mut self) -> PResult<Vec<Obj>> {
        let at = self.marks.pop().ok_or("the pickle closes a mark it did not open")?;
        Ok(self.stack.split_off(at))
    }

    /// A new container of `items` (its depth checked).
    fn node<T>(items: Vec<T>, depth_of: impl Fn(&T) -> usize) -> PResult<Rc<Node<T>>> {
        let depth = 1 + items.iter().map(depth_of).max().unwrap_or(0);
        if depth > MAX_NESTING {
            return Err(format!("values nested more than {MAX_NESTING} levels deep"));
        }
        Ok(Rc::new(Node { depth, items }))
    }

    /// Appends to the container on top of the stack, copying it first if the memo shares it.
    fn extend_top(&mut self, items: Vec<Obj>, pairs: bool) -> PResult<()> {
        let budget = self.copy_budget;
        let mut copied = self.copied;
        let result = match self.top()? {
            Obj::List(node) if !pairs => {
                if Rc::strong_count(node) > 1 {
                    copied += node.items.len();
                }
                let node = Rc::make_mut(node);
                let depth = items.iter().map(Obj::depth).max().unwrap_or(0) + 1;
                node.depth = node.depth.max(depth);
                node.items.extend(items);
                Ok(node.depth)
            }
            Obj::Dict(node) if pairs => {
                if !items.len().is_multiple_of(2) {
                    return Err("a dict update has a key without a value".into());
                }
                if Rc::strong_count(node) > 1 {
                    copied += node.items.len();
                }
                let node = Rc::make_mut(node);
                let depth = items.iter().map(Obj::depth).max().unwrap_or(0) + 1;
                node.depth = node.depth.max(depth);
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    node.items.push((k, v));
                }
                Ok(node.depth)
            }
            // Sets and objects of other classes: their items are not needed.
            Obj::Opaque => Ok(0),
            _ => Err(format!("the pickle adds items to a value that is not a {}", if pairs { "dict" } else { "list" })),
        };
        let depth = result?;
        if depth > MAX_NESTING {
            return Err(format!("values nested more than {MAX_NESTING} levels deep"));
        }
        if copied > budget {
            return Err("the pickle copies shared values more than its size allows".into());
        }
        self.copied = copied;
        Ok(())
    }

    fn memo_get(&self, key: u64) -> PResult<Obj> {
        self.memo.get(&key).cloned().ok_or_else(|| format!("the pickle refers to memo entry {key}, which it never set"))
    }

    fn memo_put(&mut self, key: u64) -> PResult<()> {
        let top = self.top()?.clone();
        self.memo.insert(key, top);
        Ok(())
    }

    /// Runs the pickle to its STOP and returns the value it built.
    fn run(mut self) -> PResult<Obj> {
        loop {
            let at = self.pos;
            let op = self.u8().map_err(|_| "the pickle ends without a STOP opcode".to_string())?;
            match op {
                b'.' => {
                    let result = self.pop()?;
                    return Ok(result);
                }
                0x80 => {
                    self.u8()?;
                }
                0x95 => {
                    self.le::<8>()?;
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?.clone();
                    self.push(top);
                }
                b'N' => self.push(Obj::None),
                0x88 => self.push(Obj::Bool(true)),
                0x89 => self.push(Obj::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.le()?);
                    self.push(Obj::Int(v.into()));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Obj::Int(v.into()));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.le()?);
                    self.push(Obj::Int(v.into()));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a { u64::from(self.u8()?) } else { u64::from(u32::from_le_bytes(self.le()?)) };
                    let bytes = self.take(n)?;
                    self.push(little_endian_int(bytes));
                }
                b'I' | b'L' => {
                    let line = self.line()?;
                    let text = line.trim_end_matches('L');
                    let obj = match text {
                        "01" => Obj::Bool(true),
                        "00" => Obj::Bool(false),
                        _ => text.parse::<i64>().map(Obj::Int).unwrap_or(Obj::Opaque),
                    };
                    self.push(obj);
                }
                b'G' => {
                    self.le::<8>()?;
                    self.push(Obj::Opaque);
                }
                b'F' => {
                    self.line()?;
                    self.push(Obj::Opaque);
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => u64::from(u32::from_le_bytes(self.le()?)),
                        0x8c => u64::from(self.u8()?),
                        _ => u64::from_le_bytes(self.le()?),
                    };
                    let bytes = self.take(n)?;
                    self.push(Obj::Str(String::from_utf8_lossy(bytes).into()));
                }
                b'T' | b'U' => {
                    let n = if op == b'T' {
                        let n = i32::from_le_bytes(self.le()?);
                        u64::try_from(n).map_err(|_| format!("a string at byte {at} has a negative length"))?
                    } else {
                        u64::from(self.u8()?)
                    };
                    let bytes = self.take(n)?;
                    self.push(Obj::Str(String::from_utf8_lossy(bytes).into()));
                }
                b'V' => {
                    let line = self.line()?;
                    self.push(Obj::Str(line.into()));
                }
                b'S' => {
                    let line = self.line()?;
                    let s = line.strip_prefix(['\'', '"']).and_then(|s| s.strip_suffix(['\'', '"'])).unwrap_or(line);
                    self.push(Obj::Str(s.into()));
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => u64::from(u32::from_le_bytes(self.le()?)),
                        b'C' => u64::from(self.u8()?),
                        _ => u64::from_le_bytes(self.le()?),
                    };
                    self.take(n)?;
                    self.push(Obj::Opaque);
                }
                b')' => self.push(Obj::Tuple(Self::node(Vec::new(), Obj::depth)?)),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Obj::Tuple(Self::node(items, Obj::depth)?));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Obj::Tuple(Self::node(items, Obj::depth)?));
                }
                b']' => self.push(Obj::List(Self::node(Vec::new(), Obj::depth)?)),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Obj::List(Self::node(items, Obj::depth)?));
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend_top(vec![v], false)?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.extend_top(items, false)?;
                }
                b'}' => self.push(Obj::Dict(Self::node(Vec::new(), |_| 0)?)),
                b'd' => {
                    let items = self.pop_mark()?;
                    if !items.len().is_multiple_of(2) {
                        return Err(format!("a dict at byte {at} has a key without a value"));
                    }
                    let mut pairs = Vec::with_capacity(items.len() / 2);
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    self.push(Obj::Dict(Self::node(pairs, |(k, v)| k.depth().max(v.depth()))?));
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.extend_top(vec![k, v], true)?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.extend_top(items, true)?;
                }
                0x8f => self.push(Obj::Opaque),
                0x90 => {
                    self.pop_mark()?;
                    self.top()?;
                }
                0x91 => {
                    self.pop_mark()?;
                    self.push(Obj::Opaque);
                }
                b'p' => {
                    let key = self.line()?.parse::<u64>().map_err(|_| format!("a PUT at byte {at} has no index"))?;
                    self.memo_put(key)?;
                }
                b'q' => {
                    let key = u64::from(self.u8()?);
                    self.memo_put(key)?;
                }
                b'r' => {
                    let key = u64::from(u32::from_le_bytes(self.le()?));
                    self.memo_put(key)?;
                }
                0x94 => {
                    let key = self.memo.len() as u64;
                    self.memo_put(key)?;
                }
                b'g' => {
                    let key = self.line()?.parse::<u64>().map_err(|_| format!("a GET at byte {at} has no index"))?;
                    let v = self.memo_get(key)?;
                    self.push(v);
                }
                b'h' => {
                    let key = u64::from(self.u8()?);
                    let v = self.memo_get(key)?;
                    self.push(v);
                }
                b'j' => {
                    let key = u64::from(u32::from_le_bytes(self.le()?));
                    let v = self.memo_get(key)?;
                    self.push(v);
                }
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    self.push(Obj::Global(Rc::new((module, name))));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let global = match (module, name) {
                        (Obj::Str(m), Obj::Str(n)) => Obj::Global(Rc::new((m.to_string(), n.to_string()))),
                        _ => return Err(format!("a STACK_GLOBAL at byte {at} is not given two strings")),
                    };
                    self.push(global);
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let obj = reduce(&callable, &args, 0)?;
                    self.push(obj);
                }
                0x81 => {
                    self.pop()?;
                    self.pop()?;
                    self.push(Obj::Opaque);
                }
                0x92 => {
                    self.pop()?;
                    self.pop()?;
                    self.pop()?;
                    self.push(Obj::Opaque);
                }
                b'i' => {
                    self.line()?;
                    self.line()?;
                    self.pop_mark()?;
                    self.push(Obj::Opaque);
                }
                b'o' => {
                    self.pop_mark()?;
                    self.push(Obj::Opaque);
                }
                b'b' => {
                    // The state of an object (an OrderedDict's `_metadata`, a tensor's hooks):
                    // not needed.
                    self.pop()?;
                    self.top()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.push(persistent_load(&pid));
                }
                b'P' => {
                    self.line()?;
                    self.push(Obj::Opaque);
                }
                other => return Err(format!("unsupported pickle opcode 0x{other:02x} at byte {at}")),
            }
        }
    }
}

/// A LONG1 / LONG4 integer: two's complement little-endian; beyond 64 bits it is opaque.
fn little_endian_int(bytes: &[u8]) -> Obj {
    if bytes.is_empty() {
        return Obj::Int(0);
    }
    if bytes.len() > 8 {
        return Obj::Opaque;
    }
    let negative = bytes[bytes.len() - 1] & 0x80 != 0;
    let mut buf = if negative { [0xffu8; 8] } else { [0u8; 8] };
    buf[..bytes.len()].copy_from_slice(bytes);
    Obj::Int(i64::from_le_bytes(buf))
}

/// torch's persistent id of a storage: `('storage', <class>, key, location, numel)`.
fn persistent_load(pid: &Obj) -> Obj {
    let Obj::Tuple(t) = pid else { return Obj::Opaque };
    let [Obj::Str(kind), class, Obj::Str(key), _location, numel] = t.items.as_slice() else { return Obj::Opaque };
    if &**kind != "storage" {
        return Obj::Opaque;
    }
    let elem = class.global().and_then(|(m, n)| Elem::of_storage(m, n));
    match (elem, numel.int()) {
        (Some(elem), Some(numel)) => Obj::Storage(Rc::new(StorageRef { key: key.to_string(), elem, numel })),
        _ => Obj::BadTensor(format!("storage `{key}` has an unknown type or size").into()),
    }
}

/// The value of `callable(*args)` for the callables a state dict uses; anything else is opaque,
/// never called.
fn reduce(callable: &Obj, args: &Obj, level: usize) -> PResult<Obj> {
    let Some((module, name)) = callable.global() else { return Ok(Obj::Opaque) };
    let items: &[Obj] = match args {
        Obj::Tuple(t) => &t.items,
        _ => &[],
    };
    Ok(match (module, name) {
        ("collections", "OrderedDict" | "defaultdict") | ("builtins", "dict") => {
            // `OrderedDict([(k, v), ...])` from older protocols; protocol 2 sets items later.
            let mut pairs = Vec::new();
            if let [Obj::List(list)] = items {
                for item in &list.items {
                    if let Obj::Tuple(kv) = item {
                        if let [k, v] = kv.items.as_slice() {
                            pairs.push((k.clone(), v.clone()));
                        }
                    }
                }
            }
            let depth = 1 + pairs.iter().map(|(k, v): &(Obj, Obj)| k.depth().max(v.depth())).max().unwrap_or(0);
            Obj::Dict(Rc::new(Node { depth, items: pairs }))
        }
        ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2" | "_rebuild_tensor_v3") => {
            rebuild_tensor(name, items)
        }
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => match items.first() {
            Some(t @ (Obj::Tensor(_) | Obj::BadTensor(_))) => t.clone(),
            _ => Obj::BadTensor("a parameter without a tensor".into()),
        },
        ("torch._tensor", "_rebuild_from_type_v2") if level == 0 => match items {
            [func, _new_type, inner, ..] => reduce(func, inner, level + 1)?,
            _ => Obj::BadTensor("`_rebuild_from_type_v2` without its arguments".into()),
        },
        _ => Obj::Opaque,
    })
}

/// `_rebuild_tensor*(storage, storage_offset, size, stride, ...)`; `_v3` adds the dtype as its
/// seventh argument.
fn rebuild_tensor(name: &str, items: &[Obj]) -> Obj {
    let bad = |why: &str| Obj::BadTensor(format!("`{name}` {why}").into());
    let [storage, offset, size, stride, rest @ ..] = items else { return bad("has fewer than 4 arguments") };
    let Obj::Storage(storage) = storage else { return bad("has no storage") };
    let (Some(offset), Some(size), Some(stride)) = (offset.int(), size.ints(), stride.ints()) else {
        return bad("has a storage offset, size or stride that is not integers");
    };
    let elem = if name == "_rebuild_tensor_v3" {
        match rest.get(2).and_then(Obj::global).and_then(|(m, n)| Elem::of_dtype(m, n)) {
            Some(e) => Some(e),
            None => return bad("has an unknown dtype"),
        }
    } else {
        None
    };
    Obj::Tensor(Rc::new(TensorRef { storage: storage.clone(), offset, size, stride, elem }))
}

/// A state-dict entry: the key and its tensor.
type Named = (String, Rc<TensorRef>);

/// The tensors of the state dict inside `top`: under `state_dict`, `model` or `module` when the
/// top-level dict has one of them holding tensors, else the top-level dict's own. Errors name a
/// key whose tensor is malformed.
fn state_dict(top: &Obj) -> PResult<Vec<Named>> {
    fn tensors(dict: &Node<(Obj, Obj)>) -> PResult<Vec<Named>> {
        let mut out: Vec<Named> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (k, v) in &dict.items {
            let Obj::Str(name) = k else { continue };
            let t = match v {
                Obj::Tensor(t) => t.clone(),
                Obj::BadTensor(why) => return Err(format!("tensor `{name}`: {why}")),
                _ => continue,
            };
            // A key set twice keeps its last value, as a Python dict does.
            match index.get(&**name) {
                Some(&i) => out[i].1 = t,
                None => {
                    index.insert(name.to_string(), out.len());
                    out.push((name.to_string(), t));
                }
            }
        }
        Ok(out)
    }
    let Obj::Dict(dict) = top else { return Ok(Vec::new()) };
    for key in ["state_dict", "model", "module"] {
        let inner = dict.items.iter().rev().find(|(k, _)| matches!(k, Obj::Str(s) if &**s == key));
        if let Some((_, Obj::Dict(inner))) = inner {
            let found = tensors(inner)?;
            if !found.is_empty() {
                return Ok(found);
            }
        }
    }
    tensors(dict)
}

/// The class names an mmdetection checkpoint carries in `meta['CLASSES']` (a tuple or list of
/// strings), if the archive's pickle holds them.
pub(crate) fn class_names(path: &Path) -> Option<Vec<String>> {
    let file = File::open(path).ok()?;
    let file_len = file.metadata().ok()?.len();
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).ok()?;
    let pkl = archive
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .filter(|n| n == "data.pkl" || n.ends_with("/data.pkl"))
        .min_by_key(|n| n.len())?;
    let data = read_entry(&mut archive, &pkl, MAX_PICKLE_BYTES.min(file_len)).ok()?;
    let top = Machine::new(&data).run().ok()?;
    let find = |obj: &Obj, key: &str| -> Option<Obj> {
        let Obj::Dict(d) = obj else { return None };
        d.items.iter().rev().find(|(k, _)| matches!(k, Obj::Str(s) if &**s == key)).map(|(_, v)| v.clone())
    };
    let classes = find(&find(&top, "meta")?, "CLASSES")?;
    let (Obj::Tuple(n) | Obj::List(n)) = classes else { return None };
    n.items.iter().map(|o| if let Obj::Str(s) = o { Some(s.to_string()) } else { None }).collect()
}

/// One stored entry of the archive, read whole after checking its declared size against the
/// file; errors name the entry.
fn read_entry(archive: &mut zip::ZipArchive<BufReader<File>>, name: &str, limit: u64) -> PResult<Vec<u8>> {
    let mut entry = archive.by_name(name).map_err(|e| format!("entry `{name}`: {e}"))?;
    let size = entry.size();
    if size > limit {
        return Err(format!("entry `{name}` declares {size} bytes, more than the {limit} it may hold"));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    (&mut entry).take(size).read_to_end(&mut bytes).map_err(|e| format!("entry `{name}`: {e}"))?;
    if bytes.len() as u64 != size {
        return Err(format!("entry `{name}` is truncated: {} of its {size} bytes", bytes.len()));
    }
    Ok(bytes)
}

/// A tensor's view, checked against its storage: its shape, element type, first element and
/// element count, and whether it is row-major contiguous.
struct View {
    shape: Vec<usize>,
    stride: Vec<usize>,
    elem: Elem,
    offset: usize,
    numel: usize,
    contiguous: bool,
}

/// Checks one tensor's shape, stride, offset and element type against its storage of
/// `storage_bytes` bytes (entry `entry`), before anything is allocated for it.
fn plan(name: &str, t: &TensorRef, entry: &str, storage_bytes: u64) -> PResult<View> {
    let at = |why: String| format!("tensor `{name}`: {why}");
    let elem = t.elem.unwrap_or(t.storage.elem);
    let esize = elem.size() as u64;
    if t.size.len() != t.stride.len() {
        return Err(at(format!("size {:?} and stride {:?} differ in length", t.size, t.stride)));
    }
    if t.size.iter().chain(&t.stride).any(|&v| v < 0) || t.offset < 0 {
        return Err(at(format!("negative size, stride or offset ({:?}, {:?}, {})", t.size, t.stride, t.offset)));
    }
    let numel = t.size.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    let last = t.size.iter().zip(&t.stride).try_fold(t.offset as u64, |acc, (&d, &s)| {
        (d as u64).saturating_sub(1).checked_mul(s as u64).and_then(|x| acc.checked_add(x))
    });
    let storage_elems = storage_bytes / esize;
    let fits = match (numel, last) {
        (Some(0), _) => true,
        (Some(n), Some(last)) => last < storage_elems && n <= storage_elems,
        _ => false,
    };
    if !fits {
        let need = numel
            .map_or_else(|| "more bytes than can exist".to_string(), |n| format!("{} bytes", n.saturating_mul(esize)));
        return Err(at(format!(
            "shape {:?}, stride {:?} and offset {} need {need} of data within its storage `{entry}`, which holds \
             {storage_bytes} bytes",
            t.size, t.stride, t.offset
        )));
    }
    // Everything fits in the storage, whose size is at most the file's: the casts are exact.
    let shape: Vec<usize> = t.size.iter().map(|&d| d as usize).collect();
    let stride: Vec<usize> = t.stride.iter().map(|&s| s as usize).collect();
    let mut expected = 1usize;
    let mut contiguous = true;
    for (&d, &s) in shape.iter().zip(&stride).rev() {
        if d != 1 && s != expected {
            contiguous = false;
        }
        expected = expected.saturating_mul(d);
    }
    Ok(View { shape, stride, elem, offset: t.offset as usize, numel: numel.unwrap_or(0) as usize, contiguous })
}

/// The elements of a checked view as a candle tensor, widening types candle lacks and swapping
/// bytes from a big-endian archive; `None` for an element type candle cannot hold.
fn build(v: &View, storage: &[u8], big_endian: bool) -> PResult<Option<Tensor>> {
    let Some(dtype) = v.elem.candle() else { return Ok(None) };
    let size = v.elem.size();
    let native = !big_endian && !matches!(v.elem, Elem::I8 | Elem::Bool | Elem::U16);
    if v.contiguous && native {
        let bytes = &storage[v.offset * size..(v.offset + v.numel) * size];
        return Tensor::from_raw_buffer(bytes, dtype, &v.shape, &Device::Cpu).map(Some).map_err(|e| e.to_string());
    }
    let mut raw = Vec::with_capacity(v.numel * size);
    let mut push = |e: usize| {
        let bytes = &storage[e * size..(e + 1) * size];
        if big_endian {
            raw.extend(bytes.iter().rev());
        } else {
            raw.extend_from_slice(bytes);
        }
    };
    if v.contiguous {
        (v.offset..v.offset + v.numel).for_each(&mut push);
    } else if v.numel > 0 {
        // Row-major order over the view's index space.
        let mut index = vec![0usize; v.shape.len()];
        'elements: loop {
            push(v.offset + index.iter().zip(&v.stride).map(|(i, s)| i * s).sum::<usize>());
            for d in (0..v.shape.len()).rev() {
                index[d] += 1;
                if index[d] < v.shape[d] {
                    continue 'elements;
                }
                index[d] = 0;
            }
            break;
        }
    }
    let raw: Vec<u8> = match v.elem {
        Elem::I8 => raw.iter().flat_map(|&b| i16::from(b as i8).to_le_bytes()).collect(),
        Elem::Bool => raw.iter().map(|&b| u8::from(b != 0)).collect(),
        Elem::U16 => {
            raw.chunks_exact(2).flat_map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])).to_le_bytes()).collect()
        }
        _ => raw,
    };
    Tensor::from_raw_buffer(&raw, dtype, &v.shape, &Device::Cpu).map(Some).map_err(|e| e.to_string())
}

/// Reads every tensor of the state dict in the `.pth` archive at `path` (see the module docs);
/// tensors of element types candle lacks are left out. Errors say what is wrong, naming the
/// archive entry or the tensor (the caller adds the file).
pub(crate) fn read(path: &Path) -> Result<Vec<(String, Tensor)>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut archive =
        zip::ZipArchive::new(BufReader::new(file)).map_err(|e| format!("not a valid zip archive: {e}"))?;
    let pkl = archive
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .filter(|n| n == "data.pkl" || n.ends_with("/data.pkl"))
        .min_by_key(|n| n.len())
        .ok_or("no `data.pkl` in the archive")?;
    let prefix = &pkl[..pkl.len() - "data.pkl".len()];
    let big_endian = match read_entry(&mut archive, &format!("{prefix}byteorder"), 16) {
        Ok(order) => order.trim_ascii() == b"big",
        Err(_) => false,
    };
    let data = read_entry(&mut archive, &pkl, MAX_PICKLE_BYTES.min(file_len))?;
    let top = Machine::new(&data).run().map_err(|e| format!("`{pkl}`: {e}"))?;
    let entries = state_dict(&top)?;
    drop(top);

    // Group the tensors by storage, read each storage once, check every view against it
    // before copying anything, and keep the total copied to a small multiple of the file.
    let mut by_storage: Vec<(String, Vec<Named>)> = Vec::new();
    let mut slot: HashMap<String, usize> = HashMap::new();
    for (name, t) in entries {
        let key = t.storage.key.clone();
        let i = *slot.entry(key.clone()).or_insert_with(|| {
            by_storage.push((key, Vec::new()));
            by_storage.len() - 1
        });
        by_storage[i].1.push((name, t));
    }
    let mut budget = 4 * file_len + (1 << 20);
    let mut out = Vec::new();
    for (key, views) in by_storage {
        let entry = format!("{prefix}data/{key}");
        let storage_bytes = archive.by_name(&entry).map_err(|e| format!("entry `{entry}`: {e}"))?.size();
        let mut plans = Vec::with_capacity(views.len());
        for (name, t) in &views {
            let declared = t.storage.numel;
            let esize = t.storage.elem.size() as u64;
            if u64::try_from(declared).ok().and_then(|n| n.checked_mul(esize)) != Some(storage_bytes) {
                return Err(format!(
                    "tensor `{name}`: its storage `{entry}` declares {declared} elements of {esize} bytes, but holds \
                     {storage_bytes} bytes"
                ));
            }
            let view = plan(name, t, &entry, storage_bytes)?;
            let bytes = (view.numel * view.elem.size()) as u64;
            budget = budget.checked_sub(bytes).ok_or_else(|| {
                format!("tensor `{name}`: the tensors declare more data than the {file_len}-byte file holds")
            })?;
            plans.push((name, view));
        }
        let storage = read_entry(&mut archive, &entry, file_len)?;
        for (name, view) in plans {
            if let Some(t) = build(&view, &storage, big_endian).map_err(|e| format!("tensor `{name}`: {e}"))? {
                out.push((name.clone(), t));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> PResult<Obj> {
        Machine::new(bytes).run()
    }

    #[test]
    fn integers_of_every_width() {
        assert!(matches!(run(b"\x8a\x02\xff\x7f.").unwrap(), Obj::Int(32767)));
        assert!(matches!(run(b"\x8a\x01\xff.").unwrap(), Obj::Int(-1)));
        assert!(matches!(run(b"\x8a\x00.").unwrap(), Obj::Int(0)));
        assert!(matches!(run(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.").unwrap(), Obj::Opaque));
        assert!(matches!(run(b"I42\n.").unwrap(), Obj::Int(42)));
        assert!(matches!(run(b"J\xff\xff\xff\xff.").unwrap(), Obj::Int(-1)));
    }

    #[test]
    fn lengths_beyond_the_data_are_errors_before_any_allocation() {
        let err = run(b"X\xff\xff\xff\xff").unwrap_err();
        assert!(err.contains("needs 4294967295 bytes, only 0 are left"), "{err}");
        let err = run(b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff").unwrap_err();
        assert!(err.contains("needs 18446744073709551615 bytes"), "{err}");
    }

    #[test]
    fn nesting_is_bounded() {
        let mut p = vec![b')'];
        p.extend(std::iter::repeat_n(0x85u8, MAX_NESTING + 10));
        p.push(b'.');
        let err = run(&p).unwrap_err();
        assert!(err.contains("nested more than 256 levels"), "{err}");
    }

    #[test]
    fn memo_sharing_copies_are_bounded() {
        // ] q0 ( K0 K0 ... e  then (h0 ... a) repeatedly: every APPEND on a shared list copies it.
        let mut p = vec![b']', b'q', 0, b'('];
        p.extend(std::iter::repeat_n([b'K', 0], 1000).flatten());
        p.push(b'e');
        for _ in 0..100_000 {
            p.extend_from_slice(&[b'q', 0, b'N', b'a']);
        }
        p.push(b'.');
        let err = run(&p).unwrap_err();
        assert!(err.contains("copies shared values"), "{err}");
    }

    #[test]
    fn stack_underflow_and_unknown_opcodes_are_errors() {
        assert!(run(b"0.").unwrap_err().contains("pops more values"));
        assert!(run(b"(1N1.").unwrap_err().contains("closes a mark"));
        assert!(run(b"N\xff.").unwrap_err().contains("unsupported pickle opcode 0xff at byte 1"));
        assert!(run(b"N").unwrap_err().contains("without a STOP"));
        assert!(run(b"(.").unwrap_err().contains("pops more values"), "STOP cannot pop below a mark");
    }
}
