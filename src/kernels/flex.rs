//! Moving values between flex tensors and the kernels' plain `f32` buffers: reading a
//! tensor's values, building a tensor from a buffer, and buffers written once without a
//! zero-fill pass first.

use std::mem::MaybeUninit;

use burn::backend::flex::FlexTensor;
use burn::tensor::{Shape, TensorData};

/// Contiguous float32 values of a flex tensor.
pub(crate) fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(v) => std::borrow::Cow::Borrowed(v),
        None => std::borrow::Cow::Owned(
            t.to_contiguous()
                .as_slice::<f32>()
                .expect("contiguous")
                .to_vec(),
        ),
    }
}

/// A contiguous flex tensor of `shape` holding `v`.
pub(crate) fn flex_tensor(v: Vec<f32>, shape: [usize; 5]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, Shape::from(shape.to_vec())))
}

/// A contiguous flex tensor of the shape of `like` holding `v` (an element-wise result).
pub(crate) fn flex_like(v: Vec<f32>, like: &FlexTensor) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, like.layout().shape().clone()))
}

/// Zeros into not yet initialised values.
pub(crate) fn write_zeros(dst: &mut [MaybeUninit<f32>]) {
    dst.iter_mut().for_each(|v| {
        v.write(0.0);
    });
}

/// A vector of `len` values that `fill` writes, each once, into uninitialised memory: the
/// kernels' outputs and rearranged copies, with no zero-fill pass over them first.
///
/// # Safety
/// `fill` must write every element of the slice it is given.
pub(crate) unsafe fn written_once(
    len: usize,
    fill: impl FnOnce(&mut [MaybeUninit<f32>]),
) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    fill(&mut out.spare_capacity_mut()[..len]);
    // SAFETY: `fill` initialised all `len` values (the caller's promise).
    unsafe { out.set_len(len) };
    out
}
