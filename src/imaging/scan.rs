//! Reading a baseline JPEG's quantised DCT coefficients on several cores.
//!
//! Entropy decoding is the floor of every coefficient path (it is most of a decode), and a
//! Huffman-coded scan without restart markers cannot simply be cut: nothing marks where an
//! MCU starts. But Huffman decoding started at an arbitrary bit falls into step with the true
//! code boundaries after a few codes (the self-synchronisation that S. T. Klein and Y.
//! Wiseman, "Parallel Huffman decoding with applications to JPEG files", The Computer
//! Journal 46(5), 2003, use for JPEG). So:
//!
//! 1. run 0 decodes from the start of the scan; run k (k ≥ 1) starts at byte k/N of it and
//!    decodes MCUs from there, its first few being garbage. Every run but the last goes a
//!    little past the next run's start ([`OVERLAP`]), and each records the bit position at
//!    which it starts every MCU;
//! 2. where run k−1 and run k started an MCU at the same bit, both decode the same MCUs from
//!    there on (decoding depends only on the bits ahead and on being at an MCU start), so run
//!    k's MCUs from that point are true ones and their index follows from run k−1's. This is
//!    an exact test, not a guess: if no such point exists, or the MCUs do not add up to the
//!    frame's, the result is `None` and the caller reads the scan sequentially;
//! 3. DC coefficients are coded as differences, so a run that started mid-scan has every DC
//!    off by a constant per component; that constant is known at the meeting point and
//!    added when run k's blocks are put in place.
//!
//! A scan with restart markers is simpler: a run starts just after a marker, where the DC
//! predictions are reset and an MCU starts, and meets the run before it there.
//!
//! The blocks come out exactly as `libjpeg_turbo_rs::read_coefficients` gives them (zigzag
//! order, same block grid), cut into strips of whole MCU rows that [`super::strips::join`]
//! can put back together after each strip is coded on its own core.

use libjpeg_turbo_rs as ljt;
use ljt::common::quant_table::ZIGZAG_ORDER;
use ljt::decode::bitstream::BitReader;
use ljt::decode::entropy::{McuComponentPlan, McuDecoder, resolve_mcu_plan};
use ljt::decode::marker::{JpegMetadata, MarkerReader};
use std::ops::Range;

/// Scans shorter than this are read by one core: thread start-up and the overlap would eat
/// the gain.
const MIN_PARALLEL_SCAN_BYTES: usize = if cfg!(fuzzing) { 0 } else { 1 << 20 };
/// Bytes a run decodes past the next run's start, to meet it there. Huffman decoding of JPEG
/// data falls into step within a few hundred bits; 16 KiB leaves a wide margin and costs under
/// 1 % of a multi-megabyte scan.
const OVERLAP: usize = 16 * 1024;
/// MCUs per storage chunk of a run (about 0.75 MB at 4:2:0): a run does not know how many
/// MCUs it will decode, and growing in chunks copies nothing. The chunks are the only copy of
/// the coefficients; strips are gathered from them on demand.
const CHUNK_MCUS: usize = 1024;
/// Times a run that started mid-scan may restart a little further on after hitting a code
/// that is no Huffman code (possible only in its first, out-of-step MCUs).
const MAX_RESTARTS: usize = 64;

/// Which coefficients of each block a [`Scan`] keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kept {
    /// All 64, in zigzag order, as `ljt::read_coefficients` gives them.
    All,
    /// The top-left n×n (n = 1…8) in natural (row-major) order: all that an n×n DCT-scaled
    /// inverse transform needs, so a picture that will be shrunk n/8 anyway is held in n²/64
    /// of the memory.
    TopLeft(usize),
}

impl Kept {
    /// Coefficients stored per block.
    pub(super) fn per_block(self) -> usize {
        match self {
            Kept::All => 64,
            Kept::TopLeft(n) => n * n,
        }
    }

    /// The kept coefficients of `natural` (a decoded block) appended to `out`.
    fn keep(self, natural: &[i16; 64], out: &mut Vec<i16>) {
        match self {
            Kept::All => out.extend_from_slice(&zigzag(natural)),
            Kept::TopLeft(n) => {
                // Gathered first, so the chunk grows by one copy per block, not one per row.
                let mut corner = [0i16; 64];
                for (row, dst) in natural.chunks_exact(8).zip(corner.chunks_exact_mut(n)).take(n) {
                    for (d, &v) in dst.iter_mut().zip(row) {
                        *d = v;
                    }
                }
                out.extend_from_slice(&corner[..n * n]);
            }
        }
    }

    /// A kept block back in zigzag order with the dropped coefficients zero.
    fn zigzag(self, kept: &[i16]) -> [i16; 64] {
        match self {
            Kept::All => <[i16; 64]>::try_from(kept).unwrap_or([0; 64]),
            Kept::TopLeft(8) => std::array::from_fn(|z| kept.get(ZIGZAG_ORDER[z]).copied().unwrap_or(0)),
            Kept::TopLeft(n) => std::array::from_fn(|z| {
                let (row, col) = (ZIGZAG_ORDER[z] / 8, ZIGZAG_ORDER[z] % 8);
                if row < n && col < n { kept.get(row * n + col).copied().unwrap_or(0) } else { 0 }
            }),
        }
    }
}

/// A baseline JPEG's coefficients as read by [`Scan::read`], held MCU after MCU in the
/// order the scan codes them; [`Scan::strip_into`] hands out any run of MCU rows as a JPEG's
/// coefficients of its own.
pub(super) struct Scan {
    geometry: Geometry,
    /// The frame description every strip carries (no blocks).
    template: ljt::JpegCoefficients,
    runs: Vec<Run>,
    /// Per run: the frame MCUs it supplies and the run-local index of the first of them.
    supplies: Vec<(Range<usize>, usize)>,
    /// Per run: what to add to each component's DC.
    dc_offsets: Vec<[i16; 4]>,
}

impl Scan {
    /// Reads the coefficients of a baseline, 8-bit, Huffman-coded, single-scan JPEG with every
    /// component interleaved (what cameras, phones, libjpeg and Pillow write), with or without
    /// restart markers, on up to `threads` cores.
    ///
    /// `None` when the JPEG is of another kind (progressive, arithmetic-coded, 12-bit,
    /// lossless, a single component), is corrupt or truncated, its scan
    /// is too short to be worth splitting, or the runs could not be joined exactly; the caller
    /// then reads it with `ljt::read_coefficients`, which also gives the precise error.
    pub(super) fn read(bytes: &[u8], threads: usize) -> Option<Self> {
        Self::read_with(bytes, threads, MIN_PARALLEL_SCAN_BYTES, Kept::All)
    }

    /// [`Self::read`] keeping only the coefficients `kept` names (see [`Self::mcu`]).
    pub(super) fn read_kept(bytes: &[u8], threads: usize, kept: Kept) -> Option<Self> {
        if matches!(kept, Kept::TopLeft(n) if !(1..=8).contains(&n)) {
            return None;
        }
        Self::read_with(bytes, threads, MIN_PARALLEL_SCAN_BYTES, kept)
    }

    /// [`Self::read`] for scans of at least `min_scan_bytes` (the fuzz target takes any).
    fn read_with(bytes: &[u8], threads: usize, min_scan_bytes: usize, kept: Kept) -> Option<Self> {
        let meta = MarkerReader::new(bytes).read_markers().ok()?;
        let frame = &meta.frame;
        let plain = !frame.is_progressive
            && !frame.is_lossless
            && !meta.is_arithmetic
            && frame.precision == 8
            && meta.scans.len() <= 1
            && (2..=4).contains(&frame.components.len())
            && meta.scan.components.len() == frame.components.len();
        if !plain || threads < 2 {
            return None;
        }
        let plan = resolve_mcu_plan(frame, &meta.scan, &meta.dc_huffman_tables, &meta.ac_huffman_tables).ok()?;
        let geometry = Geometry::new(&meta, &plan, kept)?;
        let template = geometry.template(&meta)?;
        // The scan runs to the EOI marker; the runs stop where their decoder meets it.
        let scan = bytes.get(meta.entropy_data_offset..)?;
        if scan.len() < min_scan_bytes {
            return None;
        }
        let count = threads.min(8);
        let interval = usize::from(meta.restart_interval);
        let starts: Vec<usize> =
            (0..count).map(|k| if k == 0 { 0 } else { entry(scan, scan.len() * k / count, interval) }).collect();
        let runs: Vec<Option<Run>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (1..count)
                .map(|k| {
                    let (plan, geometry) = (&plan, &geometry);
                    let until = starts.get(k + 1).map_or(usize::MAX, |&s| s + OVERLAP);
                    let from = starts[k];
                    scope.spawn(move || Run::decode_mid_scan(scan, from, until, interval, plan, geometry))
                })
                .collect();
            let first = Run::try_decode(scan, 0, starts[1] + OVERLAP, interval, &plan, &geometry).ok();
            std::iter::once(first).chain(handles.into_iter().map(|h| h.join().ok().flatten())).collect()
        });
        let runs: Vec<Run> = runs.into_iter().collect::<Option<_>>()?;
        let (supplies, dc_offsets) = meet(&runs, geometry.total_mcus)?;
        Some(Self { geometry, template, runs, supplies, dc_offsets })
    }

    /// MCU rows in the frame.
    pub(super) fn mcu_rows(&self) -> usize {
        self.geometry.mcus_y
    }

    /// MCUs in one MCU row.
    pub(super) fn mcus_per_row(&self) -> usize {
        self.geometry.mcus_x
    }

    /// 8×8 blocks per MCU, over all components.
    pub(super) fn blocks_per_mcu(&self) -> usize {
        self.geometry.blocks_per_mcu
    }

    /// Pixel rows per MCU row.
    pub(super) fn mcu_height(&self) -> usize {
        8 * self.geometry.sampling.iter().map(|s| s.1).max().unwrap_or(1)
    }

    /// The coefficients this scan keeps of each block.
    pub(super) fn kept(&self) -> Kept {
        self.geometry.kept
    }

    /// Per block of an MCU, in the order [`Self::mcu`] gives them: (component, block column,
    /// block row) within the MCU.
    pub(super) fn blocks_in_mcu(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        self.geometry.order.iter().map(|&(_, component, col, row)| (component, col, row))
    }

    /// Frame MCU `m` (row-major over the MCU grid): its blocks' kept coefficients, one after
    /// the other ([`Kept::per_block`] each, in [`Self::blocks_in_mcu`] order), and the DC
    /// correction per component to add to each block's first coefficient. `None` past the
    /// frame.
    pub(super) fn mcu(&self, m: usize) -> Option<(&[i16], [i16; 4])> {
        let g = &self.geometry;
        let (k, (range, first_local)) = self.supplies.iter().enumerate().find(|(_, (r, _))| r.contains(&m))?;
        let t = m - range.start + first_local;
        let size = g.blocks_per_mcu * g.kept.per_block();
        let blocks =
            self.runs[k].chunks.get(t / CHUNK_MCUS)?.get((t % CHUNK_MCUS) * size..(t % CHUNK_MCUS + 1) * size)?;
        Some((blocks, self.dc_offsets[k]))
    }

    /// The frame description: size, tables, components (with no blocks).
    pub(super) fn template(&self) -> &ljt::JpegCoefficients {
        &self.template
    }

    /// MCU rows `rows` as the coefficients of a JPEG of their own: the source's tables,
    /// components and density, the rows' own height, blocks in zigzag order exactly as
    /// `ljt::read_coefficients` gives them for those rows. Rows past the frame are left out.
    #[cfg(any(test, fuzzing))]
    pub(super) fn strip(&self, rows: Range<usize>) -> ljt::JpegCoefficients {
        let mut strip = self.template.clone();
        self.strip_into(rows, &mut strip);
        strip
    }

    /// [`Self::strip`] into `strip`, reusing its block buffers (fresh pages cost a page fault
    /// each, a good part of the time when every strip is new memory).
    pub(super) fn strip_into(&self, rows: Range<usize>, strip: &mut ljt::JpegCoefficients) {
        let g = &self.geometry;
        let rows = rows.start.min(g.mcus_y)..rows.end.min(g.mcus_y);
        let mcu_h = self.mcu_height();
        let top = rows.start * mcu_h;
        let height = (rows.len() * mcu_h).min(usize::from(self.template.height).saturating_sub(top));
        if strip.components.len() != self.template.components.len() {
            strip.components.clone_from(&self.template.components);
        }
        strip.quant_tables.clone_from(&self.template.quant_tables);
        strip.height = u16::try_from(height).unwrap_or(0);
        for ((plane, like), &(_, v)) in strip.components.iter_mut().zip(&self.template.components).zip(&g.sampling) {
            let blocks = std::mem::take(&mut plane.blocks);
            *plane = ljt::ComponentCoefficients { blocks, blocks_y: rows.len() * v, ..*like };
            // Every MCU in range is written below (the runs' supplies cover the frame).
            plane.blocks.resize(plane.blocks_x * plane.blocks_y, [0i16; 64]);
        }
        let ljt::JpegCoefficients {
            width,
            data_precision,
            restart_interval,
            density_unit,
            x_density,
            y_density,
            saw_jfif_marker,
            adobe_transform,
            ..
        } = self.template;
        (strip.width, strip.data_precision, strip.restart_interval) = (width, data_precision, restart_interval);
        (strip.density_unit, strip.x_density, strip.y_density) = (density_unit, x_density, y_density);
        (strip.saw_jfif_marker, strip.adobe_transform) = (saw_jfif_marker, adobe_transform);
        let wanted = rows.start * g.mcus_x..rows.end * g.mcus_x;
        let per_block = g.kept.per_block();
        let size = g.blocks_per_mcu * per_block;
        for (k, (range, first_local)) in self.supplies.iter().enumerate() {
            let (from, to) = (range.start.max(wanted.start), range.end.min(wanted.end));
            let offsets = self.dc_offsets[k];
            for m in from..to {
                let t = m - range.start + first_local;
                let Some(blocks) = self.runs[k].chunks.get(t / CHUNK_MCUS) else { break };
                let Some(mcu) = blocks.get((t % CHUNK_MCUS) * size..(t % CHUNK_MCUS + 1) * size) else {
                    break;
                };
                let (row, col) = (m / g.mcus_x - rows.start, m % g.mcus_x);
                for (block, &(_, component, bc, br)) in mcu.chunks_exact(per_block).zip(&g.order) {
                    let (h, v) = g.sampling[component];
                    let plane = &mut strip.components[component];
                    let at = (row * v + br) * plane.blocks_x + col * h + bc;
                    if let Some(dst) = plane.blocks.get_mut(at) {
                        *dst = g.kept.zigzag(block);
                        dst[0] = dst[0].wrapping_add(offsets[component]);
                    }
                }
            }
        }
    }
}

/// The shape of the scan: MCU grid and each component's blocks per MCU.
struct Geometry {
    mcus_x: usize,
    mcus_y: usize,
    total_mcus: usize,
    /// Per component: (h, v) sampling, i.e. blocks per MCU across and down.
    sampling: Vec<(usize, usize)>,
    blocks_per_mcu: usize,
    /// Per MCU block (in scan order): (plan entry, component, block column, block row within
    /// the MCU).
    order: Vec<(usize, usize, usize, usize)>,
    kept: Kept,
}

impl Geometry {
    fn new(meta: &JpegMetadata, plan: &[McuComponentPlan<'_>], kept: Kept) -> Option<Self> {
        let frame = &meta.frame;
        let sampling: Vec<(usize, usize)> = frame
            .components
            .iter()
            .map(|c| (usize::from(c.horizontal_sampling), usize::from(c.vertical_sampling)))
            .collect();
        let h_max = sampling.iter().map(|s| s.0).max()?;
        let v_max = sampling.iter().map(|s| s.1).max()?;
        let mcus_x = usize::from(frame.width).div_ceil(8 * h_max);
        let mcus_y = usize::from(frame.height).div_ceil(8 * v_max);
        // The scan's component order decides the block order within an MCU.
        let mut order = Vec::new();
        for (n, p) in plan.iter().enumerate() {
            let (h, v) = *sampling.get(p.comp_idx)?;
            for row in 0..v {
                for col in 0..h {
                    order.push((n, p.comp_idx, col, row));
                }
            }
        }
        (mcus_x > 0 && mcus_y > 0).then_some(Self {
            mcus_x,
            mcus_y,
            total_mcus: mcus_x * mcus_y,
            blocks_per_mcu: order.len(),
            sampling,
            order,
            kept,
        })
    }

    /// The source's frame description as `ljt::read_coefficients` gives it, without blocks.
    fn template(&self, meta: &JpegMetadata) -> Option<ljt::JpegCoefficients> {
        let frame = &meta.frame;
        // Table slots as read_coefficients numbers them: the defined slots, densely.
        let mut dense = [None; 4];
        let mut quant_tables = Vec::new();
        for (slot, table) in meta.quant_tables.iter().enumerate() {
            if let Some(table) = table {
                dense[slot] = u8::try_from(quant_tables.len()).ok();
                quant_tables.push(table.values);
            }
        }
        let density_unit = match meta.density.unit {
            ljt::DensityUnit::Unknown => 0,
            ljt::DensityUnit::Dpi => 1,
            ljt::DensityUnit::Dpcm => 2,
        };
        let components = frame
            .components
            .iter()
            .zip(&self.sampling)
            .map(|(c, &(h, v))| {
                Some(ljt::ComponentCoefficients {
                    blocks: Vec::new(),
                    blocks_x: self.mcus_x * h,
                    blocks_y: self.mcus_y * v,
                    h_sampling: c.horizontal_sampling,
                    v_sampling: c.vertical_sampling,
                    quant_table_index: dense.get(usize::from(c.quant_table_index)).copied().flatten()?,
                    component_id: c.id,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(ljt::JpegCoefficients {
            width: frame.width,
            height: frame.height,
            data_precision: 8,
            components,
            quant_tables,
            restart_interval: 0,
            density_unit,
            x_density: meta.density.x,
            y_density: meta.density.y,
            saw_jfif_marker: meta.saw_jfif_marker_at_first_sos,
            adobe_transform: meta.adobe_transform_at_first_sos,
        })
    }
}

/// What one run decoded: where each of its MCUs started, the DC predictions there, and the
/// blocks (zigzag order, MCU after MCU, [`CHUNK_MCUS`] MCUs per chunk).
struct Run {
    /// Bit position of each MCU start (see [`bit_position`]); `u64::MAX` where it could not be
    /// told, which never matches.
    starts: Vec<u64>,
    /// DC predictions per component at each MCU start.
    dc: Vec<[i16; 4]>,
    /// Kept coefficients ([`Kept`]), block after block.
    chunks: Vec<Vec<i16>>,
    /// MCUs decoded in full.
    mcus: usize,
}

impl Run {
    /// A run from byte `from` of the scan, out of step at first. On a code that is no Huffman
    /// code it starts over one byte further on (only out-of-step data can do that).
    fn decode_mid_scan(
        scan: &[u8],
        mut from: usize,
        until: usize,
        interval: usize,
        plan: &[McuComponentPlan<'_>],
        geometry: &Geometry,
    ) -> Option<Self> {
        for _ in 0..MAX_RESTARTS {
            match Self::try_decode(scan, from, until, interval, plan, geometry) {
                Ok(run) => return Some(run),
                Err(Some(failed_at)) => from = entry(scan, failed_at + 1, interval),
                Err(None) => return None,
            }
        }
        None
    }

    /// Decodes MCUs from byte `from` of the scan until the reader has passed byte `until`, or
    /// to the end of the scan. With a restart `interval` (MCUs; 0 for none), `from` is the
    /// start of the scan or just after a restart marker, and the reader and DC predictions
    /// reset every `interval` MCUs (T.81 §F.2.2.5), as the encoder did. `Err(Some(byte))`: a
    /// code that is no Huffman code, the reader at `byte`; `Err(None)`: more MCUs than the
    /// frame can hold.
    fn try_decode(
        scan: &[u8],
        from: usize,
        until: usize,
        interval: usize,
        plan: &[McuComponentPlan<'_>],
        geometry: &Geometry,
    ) -> Result<Self, Option<usize>> {
        let data = scan.get(from..).ok_or(None)?;
        let mut run = Self { starts: Vec::new(), dc: Vec::new(), chunks: Vec::new(), mcus: 0 };
        let mut reader = BitReader::new(data);
        let mut decoder = McuDecoder::new(geometry.sampling.len());
        let per_mcu = geometry.blocks_per_mcu * geometry.kept.per_block();
        let per_chunk = CHUNK_MCUS * per_mcu;
        let mut chunk: Vec<i16> = Vec::with_capacity(per_chunk);
        let mut block = [0i16; 64];
        // More MCUs than the frame has can only come from out-of-step data.
        let limit = geometry.total_mcus + CHUNK_MCUS;
        let mut since_restart = 0;
        while from + reader.position() < until {
            if run.mcus >= limit {
                return Err(None);
            }
            if interval > 0 && since_restart == interval {
                reader.reset();
                decoder.reset();
                since_restart = 0;
            }
            since_restart += 1;
            if chunk.len() == per_chunk {
                run.chunks.push(std::mem::replace(&mut chunk, Vec::with_capacity(per_chunk)));
            }
            run.starts.push(bit_position(scan, from, &reader));
            run.dc.push(predictions(&decoder));
            for &(n, ..) in &geometry.order {
                let p = &plan[n];
                if decoder.decode_block(&mut reader, p.comp_idx, p.dc_table, p.ac_table, &mut block).is_err() {
                    return Err(Some(from + reader.position()));
                }
                geometry.kept.keep(&block, &mut chunk);
            }
            if reader.insufficient_data() {
                // Ran into the end of the scan: this MCU was not in it.
                chunk.truncate(chunk.len() - per_mcu);
                run.starts.pop();
                run.dc.pop();
                break;
            }
            run.mcus += 1;
        }
        if !chunk.is_empty() {
            run.chunks.push(chunk);
        }
        Ok(run)
    }
}

/// For each run: the frame MCUs it supplies with the run-local index of the first, and its DC
/// offsets. Run 0 started at the true start; each later run is placed by the first MCU start
/// it shares with the run before it (from that run's own first true MCU on). `None` if a run
/// never meets the one before it, or the last run does not end at the frame's last MCU.
#[allow(clippy::type_complexity)]
fn meet(runs: &[Run], total_mcus: usize) -> Option<(Vec<(Range<usize>, usize)>, Vec<[i16; 4]>)> {
    let first = runs.first()?;
    // Per run: (frame index of its first true MCU, run-local index of it, DC offset).
    let mut placed: Vec<(usize, usize, [i16; 4])> = vec![(0, 0, [0; 4])];
    for pair in runs.windows(2) {
        let (prev, run) = (&pair[0], &pair[1]);
        let &(prev_index, prev_first, prev_offset) = placed.last()?;
        let (i, j) = first_common(prev.starts.get(prev_first..)?, &run.starts)?;
        let i = prev_first + i;
        let index = prev_index + (i - prev_first);
        let offset = std::array::from_fn(|c| prev.dc[i][c].wrapping_add(prev_offset[c]).wrapping_sub(run.dc[j][c]));
        placed.push((index, j, offset));
    }
    let &(last_index, last_first, _) = placed.last()?;
    let last = runs.last()?;
    if last_index + (last.mcus.checked_sub(last_first)?) != total_mcus || first.mcus == 0 {
        return None;
    }
    // Each run supplies from its first true MCU (or where the run before it stopped, which
    // is further on) up to the next run's first true MCU.
    let mut supplies = Vec::with_capacity(runs.len());
    let mut covered = 0;
    for (k, &(index, local, _)) in placed.iter().enumerate() {
        let end = placed.get(k + 1).map_or(total_mcus, |p| p.0);
        let start = index.max(covered);
        let decoded_end = index + runs[k].mcus - local;
        if end > decoded_end {
            return None;
        }
        supplies.push((start..end, local + (start - index)));
        covered = end.max(covered);
    }
    Some((supplies, placed.iter().map(|p| p.2).collect()))
}

/// For the `scan` fuzz target: reads `bytes` on `threads` runs whatever the scan's size and,
/// when that succeeds and so does the sequential reader, asserts that every block agrees.
#[cfg(fuzzing)]
pub(crate) fn check_against_sequential(bytes: &[u8], threads: usize) {
    let Some(scan) = Scan::read_with(bytes, threads, 0, Kept::All) else { return };
    let Ok(reference) = ljt::read_coefficients(bytes) else { return };
    let strip = scan.strip(0..scan.mcu_rows());
    for (c, (ours, theirs)) in strip.components.iter().zip(&reference.components).enumerate() {
        assert!(ours.blocks == theirs.blocks, "component {c} differs from the sequential reader");
    }
    // A kept corner (its size taken from the input) is the sequential reader's corner.
    let n = 1 + bytes.len() % 8;
    let Some(kept) = Scan::read_with(bytes, threads, 0, Kept::TopLeft(n)) else { return };
    let strip = kept.strip(0..kept.mcu_rows());
    for (c, (ours, theirs)) in strip.components.iter().zip(&reference.components).enumerate() {
        for (a, b) in ours.blocks.iter().zip(&theirs.blocks) {
            let corner: [i16; 64] = std::array::from_fn(|z| {
                let (row, col) = (ZIGZAG_ORDER[z] / 8, ZIGZAG_ORDER[z] % 8);
                if row < n && col < n { b[z] } else { 0 }
            });
            assert!(*a == corner, "component {c}: the kept {n}×{n} corner differs from the sequential reader");
        }
    }
}

/// `(i, j)` with `a[i] == b[j]`, the first such in `a` (both strictly increasing apart from
/// `u64::MAX` entries, which never match).
fn first_common(a: &[u64], b: &[u64]) -> Option<(usize, usize)> {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] == u64::MAX {
            i += 1;
        } else if b[j] == u64::MAX || b[j] < a[i] {
            j += 1;
        } else if a[i] < b[j] {
            i += 1;
        } else {
            return Some((i, j));
        }
    }
    None
}

/// The position of `reader`'s next unread bit as 8 × (byte offset in `scan`) + bit, or
/// `u64::MAX` when it cannot be told (at a marker, or inside a run of 0xFF fill bytes).
/// `from` is where in `scan` the reader's data starts. Readers at the same position decode
/// the same bits from there on, however their bit buffers were filled.
fn bit_position(scan: &[u8], from: usize, reader: &BitReader<'_>) -> u64 {
    let state = reader.state();
    if state.stuffed_bits != 0 {
        return u64::MAX;
    }
    let bits = usize::from(state.bits_left);
    // The unread bits are the tail of the data bytes loaded so far; walk back over as many
    // data bytes as hold them, stepping over the 0x00 stuffed after each 0xFF data byte.
    let mut at = from + state.pos;
    for _ in 0..bits.div_ceil(8) {
        if at <= from {
            return u64::MAX;
        }
        at -= 1;
        if scan[at] == 0x00 && at > from && scan[at - 1] == 0xFF {
            at -= 1;
            if at > from && scan[at - 1] == 0xFF {
                return u64::MAX;
            }
        }
    }
    let bit = (8 - bits % 8) % 8;
    (at as u64) * 8 + bit as u64
}

/// A start for a mid-scan run at or after `at`: with restart markers, just after the next
/// one; without, the first byte not just after a 0xFF (whose stuffed 0x00 would read as
/// data). The end of the scan if there is none.
fn entry(scan: &[u8], at: usize, interval: usize) -> usize {
    if interval == 0 {
        return step_in(scan, at);
    }
    let mut at = at;
    while at + 1 < scan.len() {
        if scan[at] == 0xFF && (0xD0..=0xD7).contains(&scan[at + 1]) {
            return at + 2;
        }
        at += 1;
    }
    scan.len()
}

/// The first byte at or after `at` that is not just after a 0xFF.
fn step_in(scan: &[u8], mut at: usize) -> usize {
    while at > 0 && at < scan.len() && scan[at - 1] == 0xFF {
        at += 1;
    }
    at
}

fn predictions(decoder: &McuDecoder) -> [i16; 4] {
    std::array::from_fn(|c| decoder.dc_prediction(c))
}

fn zigzag(natural: &[i16; 64]) -> [i16; 64] {
    std::array::from_fn(|z| natural[ZIGZAG_ORDER[z]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(strips: &[ljt::JpegCoefficients]) -> Vec<Vec<[i16; 64]>> {
        let n = strips[0].components.len();
        (0..n).map(|c| strips.iter().flat_map(|s| s.components[c].blocks.iter().copied()).collect()).collect()
    }

    /// The frame cut into strips of `rows` MCU rows.
    fn read_strips(bytes: &[u8], rows: usize, threads: usize) -> Option<Vec<ljt::JpegCoefficients>> {
        let scan = Scan::read(bytes, threads)?;
        Some((0..scan.mcu_rows()).step_by(rows).map(|r| scan.strip(r..r + rows)).collect())
    }

    fn noisy_jpeg(width: usize, height: usize, quality: u8, subsampling: ljt::Subsampling) -> Vec<u8> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let pixels: Vec<u8> = (0..width * height * 3)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Smooth areas and noise, so both short and long codes occur.
                let smooth = ((i / 3) % width * 255 / width) as u8;
                if (i / 3 / width / 64) % 2 == 0 { smooth } else { (state >> 24) as u8 }
            })
            .collect();
        ljt::compress(&pixels, width, height, ljt::PixelFormat::Rgb, quality, subsampling).expect("encode")
    }

    fn assert_same_as_sequential(bytes: &[u8], rows: usize, threads: usize) {
        let reference = ljt::read_coefficients(bytes).expect("sequential");
        let strips = read_strips(bytes, rows, threads).expect("parallel read applies");
        assert_eq!(strips.iter().map(|s| usize::from(s.height)).sum::<usize>(), usize::from(reference.height));
        for s in &strips {
            assert_eq!(s.width, reference.width);
            assert_eq!(s.quant_tables, reference.quant_tables);
            assert_eq!(
                (s.density_unit, s.x_density, s.y_density, s.saw_jfif_marker, s.adobe_transform),
                (
                    reference.density_unit,
                    reference.x_density,
                    reference.y_density,
                    reference.saw_jfif_marker,
                    reference.adobe_transform
                )
            );
            for (a, b) in s.components.iter().zip(&reference.components) {
                assert_eq!(
                    (a.blocks_x, a.h_sampling, a.v_sampling, a.quant_table_index, a.component_id),
                    (b.blocks_x, b.h_sampling, b.v_sampling, b.quant_table_index, b.component_id)
                );
            }
        }
        for (c, blocks) in whole(&strips).iter().enumerate() {
            let expected = &reference.components[c].blocks;
            assert_eq!(blocks.len(), expected.len(), "component {c}");
            let wrong = blocks.iter().zip(expected).filter(|(a, b)| a != b).count();
            assert_eq!(wrong, 0, "component {c}: {wrong} blocks differ");
        }
    }

    #[test]
    fn parallel_read_equals_the_sequential_reader() {
        for (w, h, q, sub) in [
            (1600, 1200, 95, ljt::Subsampling::S420),
            (1203, 997, 98, ljt::Subsampling::S444),
            (2000, 900, 90, ljt::Subsampling::S422),
        ] {
            let bytes = noisy_jpeg(w, h, q, sub);
            for threads in [2, 3, 4] {
                for rows in [1, 7, 1000] {
                    assert_same_as_sequential(&bytes, rows, threads);
                }
            }
        }
    }

    #[test]
    fn parallel_read_equals_the_sequential_reader_on_camera_photos() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata");
        // The Olympus and iPhone files have restart markers (every 4 and 204 MCUs).
        for name in ["bench/heavy_4000x3000_q95.jpg", "photos/large_olympus_ep3_12mp.jpg", "photos/iphone6_8mp_gps.jpg"]
        {
            let bytes = std::fs::read(dir.join(name)).expect("test photo");
            assert_same_as_sequential(&bytes, 8, 2);
        }
    }

    #[test]
    fn a_kept_corner_is_the_full_reads_corner() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata");
        // 4:2:0 without restart markers, 4:2:2 with one every 4 MCUs.
        for name in ["bench/heavy_4000x3000_q95.jpg", "photos/large_olympus_ep3_12mp.jpg"] {
            let bytes = std::fs::read(dir.join(name)).expect("test photo");
            let all = Scan::read(&bytes, 2).expect("parallel read");
            for n in [1, 3, 6] {
                let kept = Scan::read_kept(&bytes, 2, Kept::TopLeft(n)).expect("parallel read");
                assert_eq!(kept.kept(), Kept::TopLeft(n));
                let last = all.mcu_rows() - 2..all.mcu_rows();
                for rows in [0..2, 90..93, last] {
                    let (a, b) = (all.strip(rows.clone()), kept.strip(rows.clone()));
                    for (ca, cb) in a.components.iter().zip(&b.components) {
                        assert_eq!(ca.blocks.len(), cb.blocks.len());
                        for (ba, bb) in ca.blocks.iter().zip(&cb.blocks) {
                            let expected: [i16; 64] = std::array::from_fn(|z| {
                                let (row, col) = (ZIGZAG_ORDER[z] / 8, ZIGZAG_ORDER[z] % 8);
                                if row < n && col < n { ba[z] } else { 0 }
                            });
                            assert_eq!(*bb, expected, "{name}, {n}×{n}, MCU rows {rows:?}");
                        }
                    }
                    // `mcu` hands out the same blocks, DC corrected by the caller: the second
                    // MCU of the strip's first row starts with luma block column h.
                    let (blocks, dc) = kept.mcu(rows.start * all.mcus_per_row() + 1).expect("in the frame");
                    assert_eq!(kept.blocks_in_mcu().next(), Some((0, 0, 0)));
                    let luma = &b.components[0];
                    assert_eq!(blocks[0].wrapping_add(dc[0]), luma.blocks[usize::from(luma.h_sampling)][0]);
                    assert_eq!(blocks.len(), all.blocks_per_mcu() * n * n);
                }
            }
        }
    }

    #[test]
    fn other_kinds_and_damage_are_left_to_the_sequential_reader() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/photos");
        for name in ["progressive_nokia83_9mp_gps.jpg", "corrupt_truncated_50pct.jpg", "tiny_1x1.jpg"] {
            let bytes = std::fs::read(dir.join(name)).expect("test photo");
            assert!(read_strips(&bytes, 8, 2).is_none(), "{name}");
        }
        // A scan cut short: the last run cannot end at the last MCU.
        let bytes = noisy_jpeg(1600, 1200, 95, ljt::Subsampling::S420);
        let mut cut = bytes[..bytes.len() * 3 / 4].to_vec();
        cut.extend_from_slice(&[0xFF, 0xD9]);
        assert!(read_strips(&cut, 8, 2).is_none());
        // Damage in the middle of the scan: refused or exactly the sequential reading.
        let mut damaged = bytes.clone();
        let mid = damaged.len() / 2;
        damaged[mid] ^= 0x5A;
        if let (Some(strips), Ok(reference)) = (read_strips(&damaged, 1000, 2), ljt::read_coefficients(&damaged)) {
            assert_eq!(whole(&strips)[0], reference.components[0].blocks);
        }
    }

    #[test]
    fn damaged_scans_never_panic_and_never_read_wrong() {
        // A small fuzz run: flipped bytes anywhere in the scan, cut tails, inserted markers.
        // Whatever the damage, the parallel read either refuses or gives exactly what the
        // sequential reader gives.
        let bytes = noisy_jpeg(1600, 1200, 95, ljt::Subsampling::S420);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut compared = 0;
        for round in 0..24 {
            let mut damaged = bytes.clone();
            let at = 1000 + (next() as usize) % (damaged.len() - 2000);
            match round % 3 {
                0 => damaged[at] ^= 1 << (next() % 8),
                1 => damaged.truncate(at),
                _ => damaged.splice(at..at, [0xFF, 0xD0 + (next() % 8) as u8]).for_each(drop),
            }
            let (Some(strips), Ok(reference)) = (read_strips(&damaged, 1000, 2), ljt::read_coefficients(&damaged))
            else {
                continue;
            };
            compared += 1;
            for (c, blocks) in whole(&strips).iter().enumerate() {
                assert!(blocks == &reference.components[c].blocks, "round {round}: component {c} differs");
            }
        }
        // Single flipped bits mostly leave a decodable stream, so some rounds were compared.
        assert!(compared > 0);
    }

    #[test]
    fn bit_positions_agree_however_the_buffer_was_filled() {
        // 0xFF data bytes are followed by a stuffed 0x00, which is no data.
        let scan = [
            0x12, 0xFF, 0x00, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xDE, 0xF0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
            0x99, 0xAA, 0xBB, 0xCC,
        ];
        let mut a = BitReader::new(&scan);
        a.read_bits(3);
        a.read_bits(14);
        let mut b = BitReader::new(&scan[3..]);
        let pa = bit_position(&scan, 0, &a);
        // Bit 17 of the data is bit 1 of data byte 2, which is raw byte 3.
        assert_eq!(pa, 3 * 8 + 1);
        b.read_bits(1);
        assert_eq!(bit_position(&scan, 3, &b), pa);
        assert_eq!(step_in(&scan, 2), 3);
    }
}
