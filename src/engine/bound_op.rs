//! Rule: per-person bounding runs inside the engine, where the data is.
//!
//! The bounded plan aggregates each person's rows per group exactly (the
//! partials), then groups the partials by person and applies
//! [`crate::privacy::bounding::bound_unit`] to each person in the aggregate
//! function `dpq_bound`, on every core (DataFusion hash-partitions by person)
//! and on every Ballista executor. Its output — each person's bounded
//! contributions, one struct per (group[, quantile bin]) plus one marker per
//! person — is unnested and summed per group, so that only per-group
//! statistics reach the driver, which adds the noise.
//!
//! * **Randomness.** Each person's draws come from a ChaCha20 stream keyed by
//!   the query's bounding seed and selected by a hash of the person's identity
//!   ([`unit_rng`]): a person's contribution never depends on other people's
//!   rows, nor on how the data is partitioned.
//! * **Checks.** Every person's contributions are checked against the family's
//!   limits and the calibrated value ranges ([`bounding::check`]); one outside
//!   them is a dpq bug and fails the query closed.
//! * **Configuration.** Everything the function needs (family, limits, seed,
//!   layout) travels as its last argument, a JSON literal, so that an executor
//!   that knows the function by name can run it. The seed is the bounding seed,
//!   derived one-way from the query's seed: it does not reveal the noise.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryBuilder, Int64Array, ListBuilder, StructBuilder};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Field, FieldRef, Fields, Int32Type, Int64Type};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{Result, ScalarValue, exec_err, internal_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;
use serde::{Deserialize, Serialize};

use crate::privacy::bounding::{self, Family, GroupPartial, ValueLimit, ValueStats};

pub const BOUND_NAME: &str = "dpq_bound";
pub const LOG2_NAME: &str = "dpq_log2_bin";

/// What `dpq_bound` needs to know, passed as its last argument.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BoundConfig {
    pub family: Family,
    /// Hex of the 32-byte bounding seed.
    pub seed: String,
    pub tag: u64,
    /// Number of key columns, and whether they are domain codes (Int32) with these radixes.
    pub keys: usize,
    pub radix: Option<Vec<u32>>,
    /// Per value column: (has a sum, has squares).
    pub values: Vec<(bool, bool)>,
    /// A quantile plan: a bin column follows the keys.
    pub quantile: bool,
    /// The calibrated ranges of the value columns: (abs, squares).
    pub limits: Vec<(String, Option<String>)>,
}

impl BoundConfig {
    fn value_limits(&self) -> Result<Vec<ValueLimit>> {
        self.limits
            .iter()
            .map(|(a, s)| {
                let abs = a.parse::<u128>().map_err(|e| datafusion::error::DataFusionError::Internal(e.to_string()))?;
                let sq = s.as_ref().map(|s| s.parse::<u128>()).transpose().map_err(|e| datafusion::error::DataFusionError::Internal(e.to_string()))?;
                Ok(ValueLimit { abs, sq })
            })
            .collect()
    }
    fn seed(&self) -> Result<[u8; 32]> {
        let v = hex::decode(&self.seed).map_err(|e| datafusion::error::DataFusionError::Internal(e.to_string()))?;
        v.try_into().map_err(|_| datafusion::error::DataFusionError::Internal("a bounding seed of the wrong length".into()))
    }
    /// Whether a person with these partials was cut by the limits.
    fn cut(&self, partials: &[GroupPartial]) -> bool {
        let s = bounding::unit_shape(partials);
        match self.family {
            Family::L1 { max_rows_per_unit } => s.rows > max_rows_per_unit,
            Family::L0Linf { max_groups_per_unit, max_rows_per_group } => s.groups > max_groups_per_unit || s.max_rows_in_group > max_rows_per_group,
        }
    }
}

/// The bounding randomness of one person: a ChaCha20 stream keyed by the
/// bounding seed and selected by a hash of the person's identity (and of which
/// plan this is), so that one person's draws never depend on anyone else's rows.
pub fn unit_rng(seed: &[u8; 32], plan_tag: u64, unit: &[u8]) -> rand_chacha::ChaCha20Rng {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(plan_tag.to_le_bytes());
    h.update(unit);
    let d = h.finalize();
    let mut r = crate::privacy::samplers::seeded_rng(*seed);
    r.set_stream(u64::from_le_bytes(d[..8].try_into().unwrap()));
    r
}

/// The bounding seed of a query: one-way from its seed (which also keys the noise).
pub fn bounding_seed(seed: &[u8; 32]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"dpq bounding seed v1");
    h.update(seed);
    h.finalize().into()
}

/// The fields of one output item: the group's key bytes (NULL for the
/// person's marker) and the encoded contribution ([`Contribution`]).
pub fn item_fields() -> Fields {
    Fields::from(vec![Field::new("g", DataType::Binary, true), Field::new("c", DataType::Binary, false)])
}

fn output_type() -> DataType {
    DataType::List(Arc::new(Field::new_struct("item", item_fields(), true)))
}

/// One encoded contribution to a group (or a person's marker): what
/// `dpq_total` sums per group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contribution {
    pub rows: u64,
    /// (person, group) pairs: 1 per contribution.
    pub units: u64,
    /// Markers: people, and people whose rows the limits cut.
    pub people: u64,
    pub cut: u64,
    pub values: Vec<ValueStats>,
    /// Quantile bins: (bin, count), ascending.
    pub hist: Vec<(u32, u64)>,
}

impl Contribution {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.values.len() * 40 + self.hist.len() * 12);
        Self::encode_parts(&mut out, [self.rows, self.units, self.people, self.cut], &self.values, &self.hist);
        out
    }

    /// The encoding of a contribution with [rows, units, people, cut],
    /// `values` and `hist`, appended to `out` (no contribution built).
    pub fn encode_parts(out: &mut Vec<u8>, counts: [u64; 4], values: &[ValueStats], hist: &[(u32, u64)]) {
        for v in counts.into_iter().chain([values.len() as u64, hist.len() as u64]) {
            put_u64(out, v);
        }
        for v in values {
            put_u64(out, v.count);
            out.extend_from_slice(&v.sum.to_le_bytes());
            out.extend_from_slice(&v.sum_sq.to_le_bytes());
        }
        for &(b, n) in hist {
            out.extend_from_slice(&b.to_le_bytes());
            put_u64(out, n);
        }
    }

    pub fn decode(mut b: &[u8]) -> Result<Contribution> {
        let b = &mut b;
        let mut u = || -> Result<u64> { Ok(u64::from_le_bytes(take::<8>(b)?)) };
        let (rows, units, people, cut, nv, nh) = (u()?, u()?, u()?, u()?, u()?, u()?);
        let mut c = Contribution { rows, units, people, cut, values: Vec::new(), hist: Vec::new() };
        for _ in 0..nv {
            let count = u64::from_le_bytes(take::<8>(b)?);
            let sum = i128::from_le_bytes(take::<16>(b)?);
            let sum_sq = i128::from_le_bytes(take::<16>(b)?);
            c.values.push(ValueStats { count, sum, sum_sq });
        }
        for _ in 0..nh {
            let bin = u32::from_le_bytes(take::<4>(b)?);
            let n = u64::from_le_bytes(take::<8>(b)?);
            c.hist.push((bin, n));
        }
        Ok(c)
    }

    /// Add `o` (checked: an overflow is a dpq bug, never wrapped).
    pub fn add(&mut self, o: &Contribution) -> Result<()> {
        let of = || datafusion::error::DataFusionError::Internal("dpq_total: a total overflowed".into());
        self.rows = self.rows.checked_add(o.rows).ok_or_else(of)?;
        self.units = self.units.checked_add(o.units).ok_or_else(of)?;
        self.people = self.people.checked_add(o.people).ok_or_else(of)?;
        self.cut = self.cut.checked_add(o.cut).ok_or_else(of)?;
        if self.values.len() < o.values.len() {
            self.values.resize(o.values.len(), ValueStats::default());
        }
        for (a, b) in self.values.iter_mut().zip(&o.values) {
            a.count = a.count.checked_add(b.count).ok_or_else(of)?;
            a.sum = a.sum.checked_add(b.sum).ok_or_else(of)?;
            a.sum_sq = a.sum_sq.checked_add(b.sum_sq).ok_or_else(of)?;
        }
        if !o.hist.is_empty() {
            let mut m: std::collections::BTreeMap<u32, u64> = self.hist.iter().copied().collect();
            for &(b, n) in &o.hist {
                let e = m.entry(b).or_default();
                *e = e.checked_add(n).ok_or_else(of)?;
            }
            self.hist = m.into_iter().collect();
        }
        Ok(())
    }
}

/// `dpq_bound(unit, keys…, [bin,] rows, (count, [sum,] [squares])…, config)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct BoundUdaf {
    signature: Signature,
}

impl Default for BoundUdaf {
    fn default() -> Self {
        BoundUdaf { signature: Signature::variadic_any(Volatility::Immutable) }
    }
}

pub fn bound_udaf() -> Arc<AggregateUDF> {
    Arc::new(AggregateUDF::new_from_impl(BoundUdaf::default()))
}

/// The configuration from the function's last argument (a literal).
fn config_of(exprs: &[Arc<dyn datafusion::physical_expr::PhysicalExpr>]) -> Result<BoundConfig> {
    let Some(last) = exprs.last() else { return internal_err!("dpq_bound without arguments") };
    let Some(lit) = last.downcast_ref::<Literal>() else { return internal_err!("dpq_bound's configuration is not a literal") };
    match lit.value() {
        ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)) => {
            serde_json::from_str(s.as_str()).map_err(|e| datafusion::error::DataFusionError::Internal(format!("dpq_bound's configuration: {e}")))
        }
        _ => internal_err!("dpq_bound's configuration is not text"),
    }
}

impl AggregateUDFImpl for BoundUdaf {
    fn name(&self) -> &str {
        BOUND_NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(output_type())
    }
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(BoundAccumulator { s: Shared::new(&args)?, p: Person::default(), bytes: 0 }))
    }
    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }
    fn create_groups_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn datafusion::logical_expr::GroupsAccumulator>> {
        Ok(Box::new(BoundGroups { s: Shared::new(&args)?, people: Vec::new(), bytes: 0 }))
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(format!("{}[state]", args.name), DataType::Binary, true))])
    }
    fn is_nullable(&self) -> bool {
        true
    }
}

/// One partial row of a person: where its group key lies in the person's
/// `keys`, its rows and its quantile bin ([`NO_BIN`]: none). Its value
/// statistics are `vals[index × nv ..]` of the person. Flat, so that adding a
/// row allocates nothing of its own (a heap key and a heap value vector per
/// row made allocation ~40 % of a 10 M-event query).
#[derive(Debug, Clone, Copy)]
struct Item {
    key_start: usize,
    key_len: usize,
    bin: u32,
    rows: u64,
}

/// The bin of an item without one.
const NO_BIN: u32 = u32::MAX;

/// What every person's bounding shares: the configuration and the converters.
#[derive(Debug)]
struct Shared {
    cfg: BoundConfig,
    limits: Vec<ValueLimit>,
    seed: [u8; 32],
    n_args: usize,
    unit_conv: RowConverter,
    key_conv: Option<RowConverter>,
}

/// One person's partial rows, in four flat buffers.
#[derive(Debug, Default)]
struct Person {
    /// The person's identity (row-encoded unit value).
    unit: Option<Box<[u8]>>,
    /// The items' group keys, end to end.
    keys: Vec<u8>,
    items: Vec<Item>,
    /// `nv` value statistics per item, in item order.
    vals: Vec<ValueStats>,
}

impl Person {
    fn key(&self, it: &Item) -> &[u8] {
        &self.keys[it.key_start..it.key_start + it.key_len]
    }
    /// The heap bytes it holds (capacities: the buffers grow by doubling).
    fn bytes(&self) -> usize {
        self.unit.as_ref().map_or(0, |u| u.len()) + self.keys.capacity() + self.items.capacity() * ITEM_BYTES + self.vals.capacity() * VALUE_BYTES
    }
}

const ITEM_BYTES: usize = std::mem::size_of::<Item>();
const VALUE_BYTES: usize = std::mem::size_of::<ValueStats>();

/// The columns of one input batch, read once.
struct Cols<'a> {
    units: datafusion::arrow::row::Rows,
    key_cols: &'a [ArrayRef],
    /// Uncoded keys, row-encoded once per batch.
    key_rows: Option<datafusion::arrow::row::Rows>,
    bins: Option<&'a Int64Array>,
    rows: &'a Int64Array,
    values: Vec<(&'a Int64Array, Option<&'a datafusion::arrow::array::Decimal128Array>, Option<&'a datafusion::arrow::array::Decimal128Array>)>,
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn take<const N: usize>(b: &mut &[u8]) -> Result<[u8; N]> {
    if b.len() < N {
        return internal_err!("dpq_bound: a truncated state");
    }
    let (h, t) = b.split_at(N);
    *b = t;
    Ok(h.try_into().unwrap())
}

impl Shared {
    fn new(args: &AccumulatorArgs) -> Result<Shared> {
        let cfg = config_of(args.exprs)?;
        let n_args = args.exprs.len();
        let unit_type = args.expr_fields[0].data_type().clone();
        let key_types: Vec<DataType> = args.expr_fields[1..1 + cfg.keys].iter().map(|f| f.data_type().clone()).collect();
        let unit_conv = RowConverter::new(vec![SortField::new(unit_type)])?;
        let key_conv = if cfg.radix.is_none() && cfg.keys > 0 { Some(RowConverter::new(key_types.into_iter().map(SortField::new).collect())?) } else { None };
        Ok(Shared { limits: cfg.value_limits()?, seed: cfg.seed()?, cfg, n_args, unit_conv, key_conv })
    }

    fn columns<'a>(&self, values: &'a [ArrayRef]) -> Result<Cols<'a>> {
        if values.len() != self.n_args {
            return internal_err!("dpq_bound: {} arguments, expected {}", values.len(), self.n_args);
        }
        let units = self.unit_conv.convert_columns(&values[..1])?;
        let key_cols = &values[1..1 + self.cfg.keys];
        let key_rows = match (&self.key_conv, self.cfg.keys) {
            (Some(conv), k) if k > 0 && self.cfg.radix.is_none() => Some(conv.convert_columns(key_cols)?),
            _ => None,
        };
        let mut c = 1 + self.cfg.keys;
        let bins = if self.cfg.quantile {
            c += 1;
            Some(values[c - 1].as_primitive::<Int64Type>())
        } else {
            None
        };
        let rows = values[c].as_primitive::<Int64Type>();
        c += 1;
        let mut vals = Vec::new();
        for &(sum, sq) in &self.cfg.values {
            let cnt = values[c].as_primitive::<Int64Type>();
            c += 1;
            let s = if sum {
                c += 1;
                Some(values[c - 1].as_primitive::<Decimal128Type>())
            } else {
                None
            };
            let q = if sq {
                c += 1;
                Some(values[c - 1].as_primitive::<Decimal128Type>())
            } else {
                None
            };
            vals.push((cnt, s, q));
        }
        Ok(Cols { units, key_cols, key_rows, bins, rows, values: vals })
    }

    /// Append row `i`'s group key to `out`; false when it is outside the
    /// domain (nothing then counts of the row).
    fn push_key(&self, cols: &Cols, i: usize, out: &mut Vec<u8>) -> bool {
        if self.cfg.keys == 0 {
            return true;
        }
        if let Some(radix) = &self.cfg.radix {
            let mut id: u32 = 0;
            for (c, &r) in cols.key_cols.iter().zip(radix) {
                let codes = c.as_primitive::<Int32Type>();
                if codes.is_null(i) {
                    return false;
                }
                let v = codes.value(i);
                if v < 0 || v as u32 >= r {
                    return false;
                }
                id = id * r + v as u32;
            }
            out.extend_from_slice(&id.to_be_bytes());
            return true;
        }
        match cols.key_rows.as_ref() {
            Some(rows) => {
                out.extend_from_slice(rows.row(i).as_ref());
                true
            }
            None => false,
        }
    }

    /// Row `i` as an item of its person, or nothing when its key is outside
    /// the domain (or its bin NULL). Sets the unit if the person has none
    /// yet.
    fn add_row(&self, p: &mut Person, cols: &Cols, i: usize) {
        if p.unit.is_none() {
            p.unit = Some(cols.units.row(i).as_ref().into());
        }
        let bin = match cols.bins {
            Some(b) if b.is_null(i) => return,
            Some(b) => b.value(i) as u32,
            None => NO_BIN,
        };
        let start = p.keys.len();
        if !self.push_key(cols, i, &mut p.keys) {
            p.keys.truncate(start);
            return;
        }
        let key_len = p.keys.len() - start;
        for (cnt, s, q) in &cols.values {
            p.vals.push(ValueStats {
                count: if cnt.is_null(i) { 0 } else { cnt.value(i) as u64 },
                sum: s.filter(|a| a.is_valid(i)).map(|a| a.value(i)).unwrap_or(0),
                sum_sq: q.filter(|a| a.is_valid(i)).map(|a| a.value(i)).unwrap_or(0),
            });
        }
        let rows = if cols.rows.is_null(i) { 0 } else { cols.rows.value(i) as u64 };
        p.items.push(Item { key_start: start, key_len, bin, rows });
    }

    /// A person as a partial-aggregation state: [unit length, unit, items,
    /// keys' length, keys, per item (key offset, key length, rows, bin), the
    /// values]: flat copies, read back by [`Shared::decode`].
    fn encode(&self, p: &Person) -> Vec<u8> {
        let unit: &[u8] = p.unit.as_deref().unwrap_or(&[]);
        let mut out = Vec::with_capacity(32 + unit.len() + p.keys.len() + p.items.len() * 32 + p.vals.len() * 40);
        put_u64(&mut out, unit.len() as u64);
        out.extend_from_slice(unit);
        put_u64(&mut out, p.items.len() as u64);
        put_u64(&mut out, p.keys.len() as u64);
        out.extend_from_slice(&p.keys);
        for it in &p.items {
            put_u64(&mut out, it.key_start as u64);
            put_u64(&mut out, it.key_len as u64);
            put_u64(&mut out, it.rows);
            put_u64(&mut out, it.bin as u64);
        }
        for v in &p.vals {
            put_u64(&mut out, v.count);
            out.extend_from_slice(&v.sum.to_le_bytes());
            out.extend_from_slice(&v.sum_sq.to_le_bytes());
        }
        out
    }

    /// Merge an encoded state into `p`; the heap bytes it added. A state that
    /// does not read is a dpq bug: an internal error, never a guess.
    fn decode(&self, p: &mut Person, mut b: &[u8]) -> Result<usize> {
        let b = &mut b;
        let before = p.bytes();
        let u64_ = |b: &mut &[u8]| -> Result<u64> { Ok(u64::from_le_bytes(take::<8>(b)?)) };
        let n = u64_(b)? as usize;
        if b.len() < n {
            return internal_err!("dpq_bound: a truncated state");
        }
        let (unit, rest) = b.split_at(n);
        if n > 0 && p.unit.is_none() {
            p.unit = Some(unit.into());
        }
        *b = rest;
        let items = u64_(b)? as usize;
        let keys_len = u64_(b)? as usize;
        if b.len() < keys_len {
            return internal_err!("dpq_bound: a truncated state");
        }
        let base = p.keys.len();
        let (keys, rest) = b.split_at(keys_len);
        p.keys.extend_from_slice(keys);
        *b = rest;
        let nv = self.cfg.values.len();
        if b.len() < items.saturating_mul(32).saturating_add(items.saturating_mul(nv).saturating_mul(40)) {
            return internal_err!("dpq_bound: a truncated state");
        }
        p.items.reserve(items);
        for _ in 0..items {
            let (start, len, rows, bin) = (u64_(b)? as usize, u64_(b)? as usize, u64_(b)?, u64_(b)?);
            if start.checked_add(len).is_none_or(|e| e > keys_len) || bin > u32::MAX as u64 {
                return internal_err!("dpq_bound: a state with a key outside its keys");
            }
            p.items.push(Item { key_start: base + start, key_len: len, bin: bin as u32, rows });
        }
        p.vals.reserve(items * nv);
        for _ in 0..items * nv {
            let count = u64_(b)?;
            let sum = i128::from_le_bytes(take::<16>(b)?);
            let sum_sq = i128::from_le_bytes(take::<16>(b)?);
            p.vals.push(ValueStats { count, sum, sum_sq });
        }
        Ok(p.bytes().saturating_sub(before))
    }

    /// The person's partials merged per group, in key order, with the keys.
    fn partials<'p>(&self, p: &'p Person) -> (Vec<&'p [u8]>, Vec<GroupPartial>) {
        let nv = self.cfg.values.len();
        let mut order: Vec<usize> = (0..p.items.len()).collect();
        order.sort_unstable_by(|&a, &b| p.key(&p.items[a]).cmp(p.key(&p.items[b])));
        let mut keys: Vec<&[u8]> = Vec::new();
        let mut out: Vec<GroupPartial> = Vec::new();
        for i in order {
            let it = &p.items[i];
            let k = p.key(it);
            if keys.last() != Some(&k) {
                keys.push(k);
                out.push(GroupPartial { group: (keys.len() - 1) as u32, rows: 0, values: vec![ValueStats::default(); nv], bins: vec![] });
            }
            let q = out.last_mut().unwrap();
            q.rows += it.rows;
            if it.bin != NO_BIN {
                q.bins.push((it.bin, it.rows));
            }
            for (a, b) in q.values.iter_mut().zip(&p.vals[i * nv..(i + 1) * nv]) {
                a.count += b.count;
                a.sum += b.sum;
                a.sum_sq += b.sum_sq;
            }
        }
        for q in out.iter_mut() {
            q.bins.sort_unstable();
        }
        (keys, out)
    }

    fn list_builder(capacity: usize) -> ListBuilder<StructBuilder> {
        let fields = item_fields();
        ListBuilder::new(StructBuilder::from_fields(fields.clone(), capacity)).with_field(Arc::new(Field::new_struct("item", fields, true)))
    }

    /// Bound one person and append their contributions as one list entry.
    fn bound_into(&self, p: &Person, list: &mut ListBuilder<StructBuilder>, scratch: &mut Vec<u8>) -> Result<()> {
        let unit: &[u8] = p.unit.as_deref().unwrap_or(&[]);
        let (keys, partials) = self.partials(p);
        let mut rng = unit_rng(&self.seed, self.cfg.tag, unit);
        let contributions = bounding::bound_unit(&mut rng, &partials, self.cfg.family);
        if let Err(e) = bounding::check(&contributions, self.cfg.family, &self.limits) {
            // a contribution outside the calibrated range is a dpq bug: fail closed
            return exec_err!("dpq internal error: {e}");
        }
        let cut = self.cfg.cut(&partials) as u64;
        let sb = list.values();
        for c in &contributions {
            scratch.clear();
            Contribution::encode_parts(scratch, [c.rows, 1, 0, 0], &c.values, &c.bins);
            sb.field_builder::<BinaryBuilder>(0).unwrap().append_value(keys[c.group as usize]);
            sb.field_builder::<BinaryBuilder>(1).unwrap().append_value(&scratch[..]);
            sb.append(true);
        }
        // the person's marker: for the people count and the disclosure of what was cut
        if p.unit.is_some() {
            scratch.clear();
            Contribution::encode_parts(scratch, [0, 0, 1, cut], &[], &[]);
            sb.field_builder::<BinaryBuilder>(0).unwrap().append_null();
            sb.field_builder::<BinaryBuilder>(1).unwrap().append_value(&scratch[..]);
            sb.append(true);
        }
        list.append(true);
        Ok(())
    }
}

/// `dpq_bound` for one person (DataFusion's row-at-a-time interface).
#[derive(Debug)]
struct BoundAccumulator {
    s: Shared,
    p: Person,
    /// Heap bytes of the items, kept as they are added: DataFusion asks every
    /// group's size after every batch, and summing the items each time was
    /// 12 % of a 10 M-event query's CPU.
    bytes: usize,
}

impl Accumulator for BoundAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        if values.first().is_none_or(|v| v.is_empty()) {
            return Ok(());
        }
        let cols = self.s.columns(values)?;
        for i in 0..values[0].len() {
            let before = self.p.bytes();
            self.s.add_row(&mut self.p, &cols, i);
            self.bytes += self.p.bytes().saturating_sub(before);
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let mut list = Shared::list_builder(self.p.items.len() + 1);
        self.s.bound_into(&self.p, &mut list, &mut Vec::new())?;
        let arr: ArrayRef = Arc::new(list.finish());
        ScalarValue::try_from_array(&arr, 0)
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.bytes
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(Some(self.s.encode(&self.p)))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let b = states[0].as_binary::<i32>();
        for i in 0..b.len() {
            if b.is_valid(i) {
                self.bytes += self.s.decode(&mut self.p, b.value(i))?;
            }
        }
        Ok(())
    }
}

/// `dpq_bound` for every person of a partition at once (DataFusion's
/// vectorised interface): one state per group index, the batch's columns
/// read once. Behind the row-at-a-time adapter, every batch was sliced and
/// copied once per person (a quarter of a 10 M-event query's CPU went to
/// allocation), and every person's size was asked after every batch.
#[derive(Debug)]
struct BoundGroups {
    s: Shared,
    people: Vec<Person>,
    bytes: usize,
}

impl BoundGroups {
    fn person_bytes(p: &Person) -> usize {
        p.bytes()
    }
}

impl datafusion::logical_expr::GroupsAccumulator for BoundGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&datafusion::arrow::array::BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        if self.people.len() < total_num_groups {
            self.people.resize_with(total_num_groups, Person::default);
        }
        if group_indices.is_empty() {
            return Ok(());
        }
        let cols = self.s.columns(values)?;
        for (i, &g) in group_indices.iter().enumerate() {
            if opt_filter.is_some_and(|f| !f.is_valid(i) || !f.value(i)) {
                continue;
            }
            let p = &mut self.people[g];
            let before = p.bytes();
            self.s.add_row(p, &cols, i);
            self.bytes += p.bytes().saturating_sub(before);
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: datafusion::logical_expr::EmitTo) -> Result<ArrayRef> {
        let people = emit_to.take_needed(&mut self.people);
        let mut list = Shared::list_builder(people.len() * 2);
        let mut scratch = Vec::new();
        for p in &people {
            self.bytes = self.bytes.saturating_sub(Self::person_bytes(p));
            self.s.bound_into(p, &mut list, &mut scratch)?;
        }
        Ok(Arc::new(list.finish()))
    }

    fn state(&mut self, emit_to: datafusion::logical_expr::EmitTo) -> Result<Vec<ArrayRef>> {
        let people = emit_to.take_needed(&mut self.people);
        let mut b = BinaryBuilder::new();
        for p in &people {
            self.bytes = self.bytes.saturating_sub(Self::person_bytes(p));
            b.append_value(self.s.encode(p));
        }
        Ok(vec![Arc::new(b.finish())])
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        if self.people.len() < total_num_groups {
            self.people.resize_with(total_num_groups, Person::default);
        }
        let b = values[0].as_binary::<i32>();
        for (i, &g) in group_indices.iter().enumerate() {
            if b.is_valid(i) {
                self.bytes += self.s.decode(&mut self.people[g], b.value(i))?;
            }
        }
        Ok(())
    }

    /// Each input row as a state of its own (when DataFusion skips partial
    /// aggregation): a person with that one row.
    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&datafusion::arrow::array::BooleanArray>) -> Result<Vec<ArrayRef>> {
        let n = values.first().map_or(0, |v| v.len());
        let mut b = BinaryBuilder::new();
        if n > 0 {
            let cols = self.s.columns(values)?;
            for i in 0..n {
                if opt_filter.is_some_and(|f| !f.is_valid(i) || !f.value(i)) {
                    b.append_null();
                    continue;
                }
                let mut p = Person::default();
                self.s.add_row(&mut p, &cols, i);
                b.append_value(self.s.encode(&p));
            }
        }
        Ok(vec![Arc::new(b.finish())])
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.people.capacity() * std::mem::size_of::<Person>() + self.bytes
    }
}

/// `dpq_total(c)`: the sum of encoded contributions (see [`Contribution`]).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TotalUdaf {
    signature: Signature,
}

impl Default for TotalUdaf {
    fn default() -> Self {
        TotalUdaf { signature: Signature::exact(vec![DataType::Binary], Volatility::Immutable) }
    }
}

pub const TOTAL_NAME: &str = "dpq_total";

pub fn total_udaf() -> Arc<AggregateUDF> {
    Arc::new(AggregateUDF::new_from_impl(TotalUdaf::default()))
}

impl AggregateUDFImpl for TotalUdaf {
    fn name(&self) -> &str {
        TOTAL_NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }
    fn accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(TotalAccumulator(Contribution::default())))
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(format!("{}[total]", args.name), DataType::Binary, true))])
    }
}

#[derive(Debug)]
struct TotalAccumulator(Contribution);

impl TotalAccumulator {
    fn add_all(&mut self, a: &ArrayRef) -> Result<()> {
        let b = a.as_binary::<i32>();
        for i in 0..b.len() {
            if b.is_valid(i) {
                self.0.add(&Contribution::decode(b.value(i))?)?;
            }
        }
        Ok(())
    }
}

impl Accumulator for TotalAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.add_all(&values[0])
    }
    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Binary(Some(self.0.encode())))
    }
    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.0.values.len() * 40 + self.0.hist.len() * 16
    }
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(Some(self.0.encode()))])
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.add_all(&states[0])
    }
}

/// `dpq_log2_bin(x)`: the log₂ bin of a non-negative count, exactly as
/// [`bounding::log2_bin`] (a float log₂ rounds up just below powers of two).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Log2Bin {
    signature: Signature,
}

impl Default for Log2Bin {
    fn default() -> Self {
        Log2Bin { signature: Signature::exact(vec![DataType::Int64], Volatility::Immutable) }
    }
}

pub fn log2_bin_udf() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(Log2Bin::default()))
}

impl ScalarUDFImpl for Log2Bin {
    fn name(&self) -> &str {
        LOG2_NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arr = args.args[0].clone().into_array(args.number_rows)?;
        let x = arr.as_primitive::<Int64Type>();
        let out: Int64Array = x.iter().map(|v| v.map(|v| bounding::log2_bin(v.max(0) as u64) as i64)).collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}
