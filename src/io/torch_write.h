// Writing PyTorch checkpoints (`torch.save` zip format), the inverse of io/torch_pickle.h: used by
// tests to make `.ckpt`/`.pt` files from safetensors weights, and readable by torch.load.
//
// Layout as torch >= 1.6 writes it: ARCHIVE/data.pkl (a protocol-2 pickle), ARCHIVE/byteorder
// ("little"), ARCHIVE/data/K (one storage per tensor, data aligned to 64 bytes with "FB" padding
// in the local header's extra field, as torch's writer does), ARCHIVE/version ("3"). Entries are
// stored uncompressed with their CRC-32; ZIP64 records are written when the archive passes 4 GiB.
// The pickle is {"state_dict": OrderedDict(name -> tensor)} (Lightning's `.ckpt` layout) when
// `wrap_state_dict`, else the OrderedDict itself (a plain `torch.save(model.state_dict())`). When
// wrapping, the source's safetensors __metadata__ goes along as a top-level "__metadata__" dict of
// strings, which torch_open gives back through st_metadata (so lcm.c's embedded configs survive a
// .safetensors -> .ckpt conversion; torch.load just sees an extra entry).
#ifndef LCM_IO_TORCH_WRITE_H
#define LCM_IO_TORCH_WRITE_H

#include <stdbool.h>

#include "io/safetensors.h"
#include "lcm.h"

// Writes every tensor of `src` (in st_at order) to `path` (atomically: a temporary file in the
// same folder renamed over it). `archive` is the top folder name inside the zip (torch uses the
// file's stem or "archive"). Tensors of dtypes torch has no storage for (U16, U32, U64) are an
// LCM_ERR_UNSUPPORTED naming the tensor.
lcm_status torch_write_checkpoint(const char *path, const char *archive, const st_file *src,
                                  bool wrap_state_dict);

#endif
