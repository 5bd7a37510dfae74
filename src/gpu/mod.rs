//! The wgpu context: adapter choice, the features the kernels can use, buffers and read-back.

pub mod kernel;
pub mod layout;
pub mod records;
pub mod shader;
pub mod unrolled;

use anyhow::{anyhow, bail, Context, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use wgpu::util::DeviceExt;

/// Features the kernels use when the adapter has them; each has a portable fallback.
const WANTED_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SHADER_FLOAT32_ATOMIC)
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES);

/// Largest upload or read-back staged at once (see `Gpu::write_bytes`, `Gpu::read`).
const UPLOAD_CHUNK: usize = 32 << 20;

pub const NO_ADAPTER_HELP: &str = "no GPU adapter found: install a Vulkan driver for your GPU \
     (on Linux without a GPU: `sudo apt-get install mesa-vulkan-drivers` for the lavapipe CPU driver)";

/// How the adapter is chosen.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Case-insensitive substring of the adapter name (`--adapter`); `WGPU_BACKEND` narrows backends.
    pub adapter: Option<String>,
    /// Use the compare-and-swap gradient path even where native float atomics exist (tests).
    pub force_cas_atomics: bool,
    /// Treat the adapter as one without SHADER_F16 (tests of the f32 fallback of mixed precision).
    pub without_f16: bool,
}

pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub features: wgpu::Features,
    pub limits: wgpu::Limits,
    /// Native `atomic<f32>` add (else a CAS loop on the bits).
    pub float_atomics: bool,
    allocated: AtomicU64,
    /// The most `allocated` has been.
    peak: AtomicU64,
    /// Why the device was lost, once the driver has said so.
    lost: Arc<Mutex<Option<String>>>,
}

impl Gpu {
    pub fn new(options: &GpuOptions) -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let adapter = choose_adapter(adapters, options.adapter.as_deref())?;
        let info = adapter.get_info();
        let (device, queue) = pollster::block_on(adapter.request_device(&device_descriptor(&adapter)))
            .with_context(|| format!("cannot open the GPU device on adapter {}", info.name))?;
        Ok(Self::from_device(&adapter, device, queue, options))
    }

    /// The context of a device opened with `device_descriptor` elsewhere (the viewer's window opens
    /// it, so the trainer and the window share one device).
    pub fn from_device(
        adapter: &wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
        options: &GpuOptions,
    ) -> Self {
        let lost = Arc::new(Mutex::new(None));
        let seen = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                log::error!("the GPU device was lost ({reason:?}): {message}");
                *seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(message);
            }
        });
        let info = adapter.get_info();
        let mut features = device.features() & WANTED_FEATURES;
        if options.without_f16 {
            features.remove(wgpu::Features::SHADER_F16);
        }
        let limits = device.limits();
        let float_atomics = features.contains(wgpu::Features::SHADER_FLOAT32_ATOMIC) && !options.force_cas_atomics;
        log::info!(
            "adapter: {} ({:?}, {:?}); features: {:?}; largest buffer {} MiB, largest storage binding {} MiB",
            info.name,
            info.backend,
            info.device_type,
            features,
            limits.max_buffer_size >> 20,
            limits.max_storage_buffer_binding_size >> 20
        );
        Self {
            device,
            queue,
            info,
            features,
            limits,
            float_atomics,
            allocated: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            lost,
        }
    }

    /// An error once the driver has reported the device lost (seen at the next wait or read): every
    /// buffer and pass made after that is invalid.
    pub fn check_lost(&self) -> Result<()> {
        match &*self.lost.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
            Some(message) => bail!("the GPU device was lost: {message}"),
            None => Ok(()),
        }
    }

    /// Bytes of device memory this process allocated through `Gpu` (buffers only).
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.load(Ordering::Relaxed)
    }

    /// The most `allocated_bytes` has been.
    pub fn peak_bytes(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    fn account(&self, bytes: u64) {
        let now = self.allocated.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    /// A zeroed storage buffer that can be copied to and from.
    pub fn storage(&self, label: &str, size: u64) -> Result<wgpu::Buffer> {
        self.storage_as(label, size, wgpu::BufferUsages::empty())
    }

    /// A zeroed storage buffer that can also be used as `extra` (e.g. uniform, indirect).
    pub fn storage_as(&self, label: &str, size: u64, extra: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
        self.check_binding_size(label, size)?;
        let size = size.max(16);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let out_of_memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let invalid = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST | extra,
            mapped_at_creation: false,
        });
        let invalid = pollster::block_on(invalid.pop());
        let out_of_memory = pollster::block_on(out_of_memory.pop());
        let internal = pollster::block_on(internal.pop());
        self.check_lost().with_context(|| format!("cannot allocate {label}"))?;
        if let Some(error) = invalid.or(out_of_memory).or(internal) {
            bail!(
                "cannot allocate {label} ({} MiB; {} MiB allocated before it): {}",
                size >> 20,
                self.allocated_bytes() >> 20,
                error_chain(&error)
            );
        }
        self.account(size);
        Ok(buffer)
    }

    /// A storage buffer holding `contents` (whose length is a multiple of 4).
    pub fn storage_init(&self, label: &str, contents: &[u8]) -> Result<wgpu::Buffer> {
        let buffer = self.storage(label, contents.len() as u64)?;
        self.write_bytes(&buffer, 0, contents);
        Ok(buffer)
    }

    /// Releases a buffer made by `storage` or `storage_init` (and its count in `allocated_bytes`).
    pub fn free(&self, buffer: &wgpu::Buffer) {
        self.allocated.fetch_sub(buffer.size(), Ordering::Relaxed);
        buffer.destroy();
    }

    pub fn uniform<T: bytemuck::Pod>(&self, label: &str) -> wgpu::Buffer {
        let size = std::mem::size_of::<T>() as u64;
        self.account(size);
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A uniform buffer holding `value`.
    pub fn uniform_init<T: bytemuck::Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        self.account(std::mem::size_of::<T>() as u64);
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::bytes_of(value),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        })
    }

    /// The largest storage buffer a pass can bind whole on this adapter.
    pub fn max_buffer_bytes(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
    }

    fn check_binding_size(&self, label: &str, size: u64) -> Result<()> {
        let max = self.max_buffer_bytes();
        if size > max {
            bail!(
                "{label} needs {} MiB, more than this adapter allows in one buffer ({} MiB): use fewer rays \
                 per batch (train.patches_per_batch) or samples per ray",
                size >> 20,
                max >> 20
            );
        }
        Ok(())
    }

    /// Copies `count` values of T from the start of `buffer` to the host (blocks; not for the hot loop).
    pub fn read<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer, count: usize) -> Result<Vec<T>> {
        let item = std::mem::size_of::<T>();
        let chunk_items = (UPLOAD_CHUNK / item).max(1);
        let mut values = Vec::with_capacity(count);
        let mut first = 0;
        while first < count {
            let n = chunk_items.min(count - first);
            values.extend(self.read_range::<T>(buffer, (first * item) as u64, n)?);
            first += n;
        }
        Ok(values)
    }

    /// One read-back of `count` values of T from byte `offset` (at most `UPLOAD_CHUNK` bytes staged).
    fn read_range<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer, offset: u64, count: usize) -> Result<Vec<T>> {
        let size = (count * std::mem::size_of::<T>()) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read-back staging"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder =
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("read-back") });
        encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, size);
        self.queue.submit([encoder.finish()]);
        let slice = staging.slice(..);
        let (sender, receiver) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |result| {
            let _ = sender.send(result);
        });
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| anyhow!("GPU poll failed: {e}"))?;
        self.check_lost()?;
        receiver.recv()?.map_err(|e| anyhow!("cannot map the read-back buffer: {e}"))?;
        let view = slice.get_mapped_range().map_err(|e| anyhow!("cannot read the mapped buffer: {e:?}"))?;
        let values = bytemuck::pod_collect_to_vec::<u8, T>(&view);
        drop(view);
        staging.unmap();
        Ok(values)
    }

    pub fn write<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer, values: &[T]) {
        self.write_bytes(buffer, 0, bytemuck::cast_slice(values));
    }

    /// Writes `values` from element `index` of a buffer of `T`s on.
    pub fn write_at<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer, index: u64, values: &[T]) {
        self.write_bytes(buffer, index * std::mem::size_of::<T>() as u64, bytemuck::cast_slice(values));
    }

    /// Writes `bytes` at `offset`, in pieces of at most `UPLOAD_CHUNK` bytes, each flushed before
    /// the next is staged: wgpu stages an upload whole in host-visible memory, so a page of up to
    /// 2 GiB would otherwise take as much again while it is written.
    pub fn write_bytes(&self, buffer: &wgpu::Buffer, offset: u64, bytes: &[u8]) {
        if bytes.len() <= UPLOAD_CHUNK {
            self.queue.write_buffer(buffer, offset, bytes);
            return;
        }
        for (i, chunk) in bytes.chunks(UPLOAD_CHUNK).enumerate() {
            self.queue.write_buffer(buffer, offset + (i * UPLOAD_CHUNK) as u64, chunk);
            let index = self.queue.submit([]);
            // a lost device shows at the next read, which names the pass
            let _ = self.device.poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: None });
        }
    }

    /// Waits for one submission (and those before it).
    pub fn wait_for(&self, index: wgpu::SubmissionIndex) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: None })
            .map_err(|e| anyhow!("GPU poll failed: {e}"))?;
        Ok(())
    }

    /// Waits for all submitted work.
    pub fn wait(&self) -> Result<()> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| anyhow!("GPU poll failed: {e}"))?;
        self.check_lost()
    }

    /// Compiles one pass with bind group 0 laid out as `layout`; a validation error becomes an error
    /// naming the pass.
    pub fn compute_pipeline(
        &self,
        label: &str,
        source: &str,
        layout: &wgpu::BindGroupLayout,
    ) -> Result<wgpu::ComputePipeline> {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline_layout = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(label),
            bind_group_layouts: &[Some(layout)],
            immediate_size: 0,
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(label),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(error) = pollster::block_on(scope.pop()) {
            bail!("shader pass {label} failed to compile: {}", error_chain(&error));
        }
        Ok(pipeline)
    }
}

/// A wgpu error with its causes, one after the other.
fn error_chain(error: &wgpu::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    message
}

/// What the kernels ask of a device: the adapter's own limits (the defaults are far smaller: a compute
/// pass of 0 invocations fails) and the features of `WANTED_FEATURES` it has.
pub fn device_descriptor(adapter: &wgpu::Adapter) -> wgpu::DeviceDescriptor<'static> {
    wgpu::DeviceDescriptor {
        label: Some("infnerf device"),
        required_features: adapter.features() & WANTED_FEATURES,
        required_limits: adapter.limits(),
        ..Default::default()
    }
}

/// The adapter to use: the one whose name contains `wanted` (case-insensitive), else the most
/// capable kind (discrete GPU first, CPU last), Vulkan before GL.
pub fn choose_adapter(adapters: Vec<wgpu::Adapter>, wanted: Option<&str>) -> Result<wgpu::Adapter> {
    if adapters.is_empty() {
        bail!("{NO_ADAPTER_HELP}");
    }
    let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
    let rank = |a: &wgpu::Adapter| match a.get_info().device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let mut candidates: Vec<wgpu::Adapter> = match wanted {
        Some(wanted) => {
            let wanted = wanted.to_lowercase();
            adapters.into_iter().filter(|a| a.get_info().name.to_lowercase().contains(&wanted)).collect()
        }
        None => adapters,
    };
    // Vulkan before the GL fallback for the same device kind: it has the compute features.
    candidates.sort_by_key(|a| (rank(a), a.get_info().backend != wgpu::Backend::Vulkan));
    candidates.into_iter().next().ok_or_else(|| {
        anyhow!("--adapter {:?} matches none of the adapters: {}", wanted.unwrap_or(""), names.join(", "))
    })
}

/// Workgroup counts for `threads` invocations in groups of `size`, split over two dimensions.
pub fn dispatch_size(threads: u32, size: u32) -> (u32, u32) {
    let groups = threads.div_ceil(size).max(1);
    let x = groups.min(65535);
    (x, groups.div_ceil(x))
}
