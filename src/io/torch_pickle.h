// PyTorch checkpoints (`.pt`, `.pth`, `.ckpt`, `.bin` written by `torch.save`), read without
// executing anything from the file. Both serializations are accepted: the zip format (torch >= 1.6)
// and the older "legacy" stream (magic-number pickle, version 1001, system info, the object, the
// storage key list, then each storage as an int64 element count and its bytes; storage views are
// refused).
//
// A torch.save file is a zip archive with one top folder PREFIX holding `PREFIX/data.pkl` (a pickle
// of the saved object) and one entry `PREFIX/data/KEY` per tensor storage. The pickle is run by a
// small interpreter that knows only the opcodes torch emits for nested dicts, OrderedDicts, lists,
// tuples, ints, floats, strings, bools and None, and only these globals:
//   collections.OrderedDict                 (an empty dict; its BUILD state, e.g. _metadata, is ignored)
//   torch._utils._rebuild_tensor_v2         (storage, offset, size, stride, requires_grad, hooks[, meta])
//   torch._utils._rebuild_parameter         (tensor, requires_grad, hooks)
//   torch.{Float,Half,BFloat16,Double,Long,Int,Short,Char,Byte,Bool}Storage  (as persistent-id types)
// Any other global or opcode fails with LCM_ERR_UNSUPPORTED naming it; nothing is ever called or
// imported. Storages come from persistent ids ('storage', TYPE, KEY, LOCATION, NUMEL). Every
// tensor must be contiguous and lie inside its storage.
//
// Which tensors: the saved object must be a dict. If it holds tensors directly it is the state dict;
// otherwise the first of the keys "state_dict", "model", "module", "state" whose value is a dict is
// taken as the state dict (Lightning's {"state_dict": ...}, training scripts' {"model": ..., "iter": n}),
// and any other top-level entries are ignored. Within the state dict, nested dicts flatten to dotted
// names ({"a": {"b": t}} -> "a.b"); entries that are not tensors or dicts, and non-string keys, are
// skipped. Names are kept as written (a DDP "module." prefix is the model loader's business).
//
// Metadata: a top-level "__metadata__" dict of string -> string (what io/torch_write.h writes from a
// safetensors file's __metadata__, e.g. lcm.c's embedded configs) becomes the st_file's metadata
// (st_metadata); non-string entries in it are ignored.
//
// Tensor data is zero-copy (inside the file mapping) for stored zip entries, which is what torch
// writes, and for legacy files; deflated entries (re-zipped files) are inflated into owned buffers.
#ifndef LCM_IO_TORCH_PICKLE_H
#define LCM_IO_TORCH_PICKLE_H

#include <stdbool.h>
#include <stddef.h>

#include "io/safetensors.h"
#include "lcm.h"

// Limits against hostile pickles.
#define TORCH_MAX_DEPTH 64          // nesting of dicts when flattening
#define TORCH_MAX_MEMO (1u << 24)   // memo slots
#define TORCH_MAX_MARKS 4096        // open MARKs
#define TORCH_MAX_NAME 1024         // bytes of a flattened tensor name
#define TORCH_MAX_VALUES (1u << 22) // objects a pickle may create (a 1,200-tensor SD checkpoint: ~30k)
#define TORCH_MAX_STACK (1u << 22)  // values on the unpickler's stack at once

// Opens `path` and returns its tensors as an st_file (see io/safetensors.h), owned by the caller.
lcm_status torch_open(const char *path, st_file **out);

// The same over bytes in memory (borrowed: must outlive *out). `label` names the source in errors.
lcm_status torch_open_memory(const void *bytes, size_t size, const char *label, st_file **out);

// True when the file name ends in .pt, .pth, .ckpt or .bin (which the weight sets then open
// through torch_open).
bool torch_is_checkpoint_name(const char *path);

#endif
