//! Host structs that the kernels read and write, declared once in Rust: `gpu_struct!` makes the
//! `#[repr(C)]` bytemuck struct and the WGSL text of the same struct, so names and field order cannot
//! drift. WGSL's alignment rules (a `vec3<f32>` is 16-byte aligned) can still disagree with Rust's;
//! `tests/shaders.rs` compares every struct's size and field offsets with naga's layout.

/// A Rust type with a WGSL spelling.
pub trait WgslType {
    /// The WGSL type name, e.g. `vec3<f32>` or `Ray`.
    fn wgsl_name() -> String;
    /// The WGSL struct definition, for structs; None for built-in types.
    fn wgsl_definition() -> Option<String> {
        None
    }
}

/// A struct declared with [`gpu_struct!`].
pub trait GpuStruct: WgslType + bytemuck::Pod {
    /// (field name, byte offset) in the Rust layout, in declaration order.
    fn host_offsets() -> Vec<(&'static str, usize)>;
}

macro_rules! wgsl_builtin {
    ($($ty:ty => $name:literal),* $(,)?) => {
        $(impl WgslType for $ty {
            fn wgsl_name() -> String {
                $name.to_string()
            }
        })*
    };
}

wgsl_builtin! {
    f32 => "f32",
    u32 => "u32",
    i32 => "i32",
    [f32; 2] => "vec2<f32>",
    [f32; 3] => "vec3<f32>",
    [f32; 4] => "vec4<f32>",
    [u32; 2] => "vec2<u32>",
    [u32; 3] => "vec3<u32>",
    [u32; 4] => "vec4<u32>",
    [u32; 8] => "array<u32, 8>",
    [[f32; 4]; 3] => "array<vec4<f32>, 3>",
    [[f32; 4]; 4] => "array<vec4<f32>, 4>",
    [[u32; 4]; 5] => "array<vec4<u32>, 5>",
}

/// The element types whose number format follows `train.precision`: WGSL aliases that the generated
/// header defines as f16 types under mixed precision and as f32 types otherwise
/// (`KernelShape::half`), so a pass is written once for both.
pub mod precision {
    /// An entry's two features in the hash tables' f16 copy (`vec2<f16>` / `vec2<f32>`).
    pub struct TablePair;
    /// One feature of that copy, as Adam writes it (`f16` / `f32`).
    pub struct TableEntry;
    /// A sample's gradient dLoss/d(rgb, sigma), times the loss scale (`vec4<f16>` / `vec4<f32>`).
    pub struct GradRecord;
    /// Four words of a sample's stored activations (`vec4<f16>` / `vec4<f32>`).
    pub struct ActRecord;

    macro_rules! alias {
        ($($ty:ident),*) => {
            $(impl super::WgslType for $ty {
                fn wgsl_name() -> String {
                    stringify!($ty).to_string()
                }
            })*
        };
    }
    alias!(TablePair, TableEntry, GradRecord, ActRecord);
}

/// Declares a struct shared with the kernels: the Rust definition (`#[repr(C)]`, Pod) and its WGSL
/// twin, with the doc comments of the fields as WGSL comments.
#[macro_export]
macro_rules! gpu_struct {
    (
        $(#[doc = $doc:expr])*
        pub struct $name:ident {
            $( $(#[doc = $fdoc:expr])* pub $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[doc = $doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            $( $(#[doc = $fdoc])* pub $field: $ty ),*
        }

        impl $crate::gpu::layout::WgslType for $name {
            fn wgsl_name() -> String {
                stringify!($name).to_string()
            }

            fn wgsl_definition() -> Option<String> {
                let mut text = String::new();
                $( text.push_str(&format!("//{}\n", $doc)); )*
                text.push_str(concat!("struct ", stringify!($name), " {\n"));
                $(
                    $( text.push_str(&format!("    //{}\n", $fdoc)); )*
                    text.push_str(&format!(
                        "    {}: {},\n",
                        stringify!($field),
                        <$ty as $crate::gpu::layout::WgslType>::wgsl_name()
                    ));
                )*
                text.push_str("}\n");
                Some(text)
            }
        }

        impl $crate::gpu::layout::GpuStruct for $name {
            fn host_offsets() -> Vec<(&'static str, usize)> {
                vec![$( (stringify!($field), std::mem::offset_of!($name, $field)) ),*]
            }
        }
    };
}
