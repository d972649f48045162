//! Multi-planar V4L2 capture (`V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE`): the buffer API that
//! ARM camera pipelines (ISPs, CSI receivers such as Rockchip's, NXP's, TI's) expose, where
//! NV12 arrives as two separately mapped planes (`NM12`: luma, then interleaved CbCr).
//!
//! The `v4l` crate (0.14) speaks only the single-planar API (its formats, streams and
//! buffer descriptors use `v4l2_pix_format` and one mapping per buffer), so this module
//! issues the few ioctls itself, through the crate's own `ioctl`/`mmap` wrappers and its
//! bindgen types: enumerate formats, set the format, set the frame rate, request, map,
//! queue and dequeue buffers. Everything else (opening, capabilities, frame sizes and
//! intervals, which take no buffer type) still goes through the crate.
//!
//! Like the crate's `MmapStream`, the buffer lent by [`MplaneStream::next`] is queued back
//! on the following call; dropping the stream stops it, unmaps every plane and frees the
//! driver's buffers.

use std::io;
use std::os::raw::c_void;
use std::sync::Arc;
use std::time::Duration;
use v4l::device::Handle;
use v4l::v4l2;
use v4l::v4l2::vidioc;
use v4l::v4l_sys::{
    v4l2_buffer, v4l2_fmtdesc, v4l2_format, v4l2_plane, v4l2_requestbuffers, v4l2_streamparm,
};
use v4l::FourCC;

/// `V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE`.
const TYPE: u32 = v4l::buffer::Type::VideoCaptureMplane as u32;
/// `V4L2_MEMORY_MMAP`.
const MMAP: u32 = v4l::memory::Memory::Mmap as u32;
/// `VIDEO_MAX_PLANES`.
const MAX_PLANES: usize = 8;
/// `V4L2_FIELD_NONE` (progressive).
const FIELD_NONE: u32 = 1;
/// `V4L2_BUF_FLAG_ERROR`.
const FLAG_ERROR: u32 = 0x40;

fn ioctl<T>(fd: i32, request: vidioc::_IOC_TYPE, arg: &mut T) -> io::Result<()> {
    // SAFETY: `arg` is the structure the request is defined for (the caller pairs them as
    // in videodev2.h), valid and exclusively borrowed for the call.
    unsafe { v4l2::ioctl(fd, request, arg as *mut T as *mut c_void) }
}

/// The pixel formats a multi-planar capture node lists (fourccs).
pub fn formats(handle: &Handle) -> io::Result<Vec<FourCC>> {
    let mut out = Vec::new();
    for index in 0.. {
        // SAFETY: a plain C struct, all zero is a valid value.
        let mut d: v4l2_fmtdesc = unsafe { std::mem::zeroed() };
        d.index = index;
        d.type_ = TYPE;
        match ioctl(handle.fd(), vidioc::VIDIOC_ENUM_FMT, &mut d) {
            Ok(()) => out.push(FourCC::from(d.pixelformat)),
            // EINVAL ends the list.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// A dequeued frame: its metadata, the first plane's bytes and, for a two-plane format,
/// the second's (borrowed from the mapped buffers until the next dequeue).
pub type Planes<'a> = (FrameMeta, &'a [u8], Option<&'a [u8]>);

/// What the driver set: per-plane line strides and sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaneFormat {
    pub fourcc: FourCC,
    pub width: u32,
    pub height: u32,
    pub planes: usize,
    /// Bytes per line of the first two planes.
    pub stride: [u32; 2],
}

/// Sets the capture format; returns what the driver chose.
pub fn set_format(
    handle: &Handle,
    fourcc: FourCC,
    width: u32,
    height: u32,
) -> io::Result<PlaneFormat> {
    // SAFETY: a plain C struct, all zero is a valid value.
    let mut f: v4l2_format = unsafe { std::mem::zeroed() };
    f.type_ = TYPE;
    // `pix_mp`: the union member for the multi-planar buffer type set above.
    f.fmt.pix_mp.width = width;
    f.fmt.pix_mp.height = height;
    f.fmt.pix_mp.pixelformat = u32::from(fourcc);
    f.fmt.pix_mp.field = FIELD_NONE;
    ioctl(handle.fd(), vidioc::VIDIOC_S_FMT, &mut f)?;
    // SAFETY: as above; the driver filled in `pix_mp`. The struct is packed: fields are
    // copied out, never borrowed.
    let p = unsafe { f.fmt.pix_mp };
    let planes = (p.num_planes as usize).min(MAX_PLANES);
    let plane_fmt = p.plane_fmt;
    let (s0, s1) = (plane_fmt[0].bytesperline, plane_fmt[1].bytesperline);
    Ok(PlaneFormat {
        fourcc: FourCC::from(p.pixelformat),
        width: p.width,
        height: p.height,
        planes,
        stride: [s0, if planes > 1 { s1 } else { 0 }],
    })
}

/// Asks for a frame rate (`VIDIOC_S_PARM` on the multi-planar type).
pub fn set_fps(handle: &Handle, fps: u32) -> io::Result<()> {
    // SAFETY: a plain C struct, all zero is a valid value.
    let mut p: v4l2_streamparm = unsafe { std::mem::zeroed() };
    p.type_ = TYPE;
    // `capture`: the union member for a capture type.
    p.parm.capture.timeperframe.numerator = 1;
    p.parm.capture.timeperframe.denominator = fps.max(1);
    ioctl(handle.fd(), vidioc::VIDIOC_S_PARM, &mut p)
}

/// One mapped plane.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

/// What [`MplaneStream::next`] reports besides the planes' bytes.
#[derive(Debug, Clone, Copy)]
pub struct FrameMeta {
    pub sequence: u32,
    /// The driver flagged the buffer as corrupt (`V4L2_BUF_FLAG_ERROR`).
    pub error: bool,
}

/// A streaming multi-planar capture: mapped buffers, queued and dequeued in turn.
pub struct MplaneStream {
    handle: Arc<Handle>,
    /// Per buffer, per plane.
    buffers: Vec<Vec<Mapping>>,
    planes: usize,
    /// The buffer lent out by the last `next`, queued back on the following one.
    lent: Option<u32>,
    streaming: bool,
    /// Per plane of the lent buffer: (offset of the data, end of the data).
    used: [(usize, usize); MAX_PLANES],
}

// SAFETY: the mappings belong to this stream alone (nothing else holds the pointers) and
// are only touched through `&mut self`, like the crate's own `MmapStream`.
unsafe impl Send for MplaneStream {}

fn buffer(index: u32, planes: &mut [v4l2_plane; MAX_PLANES], count: usize) -> v4l2_buffer {
    // SAFETY: a plain C struct, all zero is a valid value.
    let mut b: v4l2_buffer = unsafe { std::mem::zeroed() };
    b.index = index;
    b.type_ = TYPE;
    b.memory = MMAP;
    b.m.planes = planes.as_mut_ptr();
    b.length = count as u32;
    b
}

fn no_planes() -> [v4l2_plane; MAX_PLANES] {
    // SAFETY: a plain C struct, all zero is a valid value.
    unsafe { std::mem::zeroed() }
}

impl MplaneStream {
    /// Requests `count` buffers of a format with `planes` planes and maps them.
    pub fn new(handle: Arc<Handle>, count: u32, planes: usize) -> io::Result<Self> {
        let planes = planes.clamp(1, MAX_PLANES);
        // SAFETY: a plain C struct, all zero is a valid value.
        let mut req: v4l2_requestbuffers = unsafe { std::mem::zeroed() };
        req.count = count;
        req.type_ = TYPE;
        req.memory = MMAP;
        ioctl(handle.fd(), vidioc::VIDIOC_REQBUFS, &mut req)?;
        let mut s = MplaneStream {
            handle,
            buffers: Vec::new(),
            planes,
            lent: None,
            streaming: false,
            used: [(0, 0); MAX_PLANES],
        };
        for index in 0..req.count {
            let mut p = no_planes();
            let mut b = buffer(index, &mut p, planes);
            ioctl(s.handle.fd(), vidioc::VIDIOC_QUERYBUF, &mut b)?;
            let mut maps = Vec::with_capacity(planes);
            for plane in p.iter().take(planes) {
                let len = plane.length as usize;
                // SAFETY: maps the driver's buffer plane at the offset it gave for it; the
                // mapping is undone in `Drop`.
                let ptr = unsafe {
                    v4l2::mmap(
                        std::ptr::null_mut(),
                        len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED,
                        s.handle.fd(),
                        plane.m.mem_offset as libc::off_t,
                    )?
                };
                maps.push(Mapping {
                    ptr: ptr as *mut u8,
                    len,
                });
            }
            s.buffers.push(maps);
        }
        Ok(s)
    }

    fn queue(&mut self, index: u32) -> io::Result<()> {
        let mut p = no_planes();
        let mut b = buffer(index, &mut p, self.planes);
        ioctl(self.handle.fd(), vidioc::VIDIOC_QBUF, &mut b)
    }

    /// The next frame: waits at most `wait` (the first call queues every buffer and starts
    /// streaming). Returns the bytes of the first plane and, for a two-plane format, of the
    /// second (each from the driver's data offset to its `bytesused`).
    pub fn next(&mut self, wait: Duration) -> io::Result<Planes<'_>> {
        if !self.streaming {
            for index in 0..self.buffers.len() as u32 {
                self.queue(index)?;
            }
            let mut t = TYPE as i32;
            ioctl(self.handle.fd(), vidioc::VIDIOC_STREAMON, &mut t)?;
            self.streaming = true;
        } else if let Some(index) = self.lent.take() {
            self.queue(index)?;
        }
        let ms = wait.as_millis().min(i32::MAX as u128) as i32;
        if self.handle.poll(libc::POLLIN, ms)? == 0 {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "VIDIOC_DQBUF"));
        }
        let mut p = no_planes();
        let mut b = buffer(0, &mut p, self.planes);
        ioctl(self.handle.fd(), vidioc::VIDIOC_DQBUF, &mut b)?;
        let maps = self.buffers.get(b.index as usize).ok_or_else(|| {
            io::Error::other(format!(
                "the driver returned buffer {} of {}",
                b.index,
                self.buffers.len()
            ))
        })?;
        self.lent = Some(b.index);
        for (i, (plane, map)) in p.iter().zip(maps).enumerate() {
            let end = (plane.bytesused as usize).min(map.len);
            let start = (plane.data_offset as usize).min(end);
            self.used[i] = (start, end);
        }
        let maps = &self.buffers[b.index as usize];
        let bytes = |i: usize| -> &[u8] {
            match maps.get(i) {
                // SAFETY: the mapping is `len` bytes long and lives as long as `self`; the
                // driver does not write a dequeued buffer until it is queued again, which
                // needs `&mut self`.
                Some(m) => unsafe {
                    std::slice::from_raw_parts(
                        m.ptr.add(self.used[i].0),
                        self.used[i].1 - self.used[i].0,
                    )
                },
                None => &[],
            }
        };
        Ok((
            FrameMeta {
                sequence: b.sequence,
                error: b.flags & FLAG_ERROR != 0,
            },
            bytes(0),
            (self.planes > 1).then(|| bytes(1)),
        ))
    }
}

impl Drop for MplaneStream {
    fn drop(&mut self) {
        if self.streaming {
            let mut t = TYPE as i32;
            let _ = ioctl(self.handle.fd(), vidioc::VIDIOC_STREAMOFF, &mut t);
        }
        for maps in self.buffers.drain(..) {
            for m in maps {
                // SAFETY: unmaps a mapping made in `new`, once.
                let _ = unsafe { v4l2::munmap(m.ptr as *mut c_void, m.len) };
            }
        }
        // SAFETY: a plain C struct, all zero is a valid value.
        let mut req: v4l2_requestbuffers = unsafe { std::mem::zeroed() };
        req.type_ = TYPE;
        req.memory = MMAP;
        let _ = ioctl(self.handle.fd(), vidioc::VIDIOC_REQBUFS, &mut req);
    }
}
