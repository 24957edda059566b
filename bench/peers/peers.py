#!/usr/bin/env python3
"""The peers of lcm.c, timed the way `lcm bench` times lcm.c (bench/peers/run.sh drives this file).

Each subcommand runs in its own process, so that the peak RSS it reports is its own:
  torch       PyTorch + diffusers' LatentConsistencyModelPipeline, fp32 / bf16 weights / fp32 weights
              under torch.autocast(bfloat16); with --controlnet: StableDiffusionControlNetPipeline with
              LCMScheduler and the LCM-LoRA loaded and fused (load_lora_weights + fuse_lora)
  cn-prepare  (--controlnet variant, once) the SD1.5 + fused LoRA model: a diffusers folder (for
              lcm quantize) and its OpenVINO IR converted as the reference notebook does
  ov-quantize collects UNet inputs from OpenVINO runs of calibration captions and quantizes the UNet
              with nncf.quantize as the notebook does (TRANSFORMER model type, no bias correction)
  ov          on the IR that `optimum-cli export openvino` wrote (run.sh converts), the notebook's pipeline loop (diffusers' CLIPTokenizer and LCMScheduler around the
              compiled OpenVINO models), at f32 or at the CPU plugin's default inference precision
  table       turns the JSON results of every system into the Markdown table
A timed system prints one JSON object on its last line of stdout.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import numpy as np


def now():
    return time.perf_counter()


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def time_stages(stages, runs):
    """Times the stages as `lcm bench` does: one warm-up call of each, then `runs` rounds of every stage in
    turn, so that a round's stages and its end to end meet the same load on a shared machine (timing each
    stage's runs back to back let a load change between the stages and the end to end read as a cost of
    the pipeline, see README). `stages`: name -> function, called in order. Returns
    {name: median wall seconds} and {name: median CPU seconds of this process, all threads}."""
    for fn in stages.values():
        fn()
    wall, cpu = {name: [] for name in stages}, {name: [] for name in stages}
    for _ in range(runs):
        for name, fn in stages.items():
            start, start_cpu = now(), time.process_time()
            fn()
            wall[name].append(now() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return ({name: statistics.median(v) for name, v in wall.items()},
            {name: statistics.median(v) for name, v in cpu.items()})


def stage_result(wall, cpu, **extra):
    """The JSON of a timed system, in the table's terms."""
    return dict({"text_encoding_s": wall["text"], "unet_step_s": wall["unet"], "vae_decode_s": wall["vae"],
                 "end_to_end_s": wall["e2e"], "end_to_end_cpu_s": cpu["e2e"],
                 "cpu_s": {name: cpu[name] for name in ("text", "unet", "vae", "e2e")}}, **extra)


def parse_size(text):
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def guidance_embedding(guidance_scale, dim):
    """LCM's w embedding, computed by the diffusers pipeline's own function (w = guidance - 1)."""
    import torch
    from diffusers import LatentConsistencyModelPipeline

    w = torch.tensor([guidance_scale - 1.0])
    return LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, embedding_dim=dim)


# ---- PyTorch + diffusers --------------------------------------------------------------------------

def load_torch_controlnet(args, dtype):
    """SD1.5 + ControlNet with LCMScheduler and the LCM-LoRA fused, as the reference notebook builds it."""
    from diffusers import ControlNetModel, LCMScheduler, StableDiffusionControlNetPipeline

    controlnet = ControlNetModel.from_pretrained(args.controlnet, torch_dtype=dtype)
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        args.model, controlnet=controlnet, torch_dtype=dtype, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(args.lora)
    pipe.fuse_lora()
    pipe.unload_lora_weights()  # the fused weights stay; the LoRA layers go
    return pipe


def uses_cfg(args, unet_config):
    """Classifier-free guidance as diffusers decides it: a UNet without LCM's guidance embedding, guidance > 1."""
    return unet_config.get("time_cond_proj_dim") is None and args.guidance > 1


def run_torch(args):
    import contextlib

    import torch

    torch.set_num_threads(args.threads)
    weights_dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.precision == "bf16-autocast" \
        else contextlib.nullcontext
    width, height = parse_size(args.size)

    start = now()
    if args.controlnet:
        pipe = load_torch_controlnet(args, weights_dtype)
    else:
        from diffusers import LatentConsistencyModelPipeline

        pipe = LatentConsistencyModelPipeline.from_pretrained(
            args.model, torch_dtype=weights_dtype, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
    load_s = now() - start
    pipe.set_progress_bar_config(disable=True)

    unet_config = pipe.unet.config
    cfg = uses_cfg(args, unet_config)
    latents = torch.randn((1, unet_config.in_channels, height // 8, width // 8),
                          generator=torch.Generator().manual_seed(0)).to(weights_dtype)
    w_embedding = None
    if unet_config.time_cond_proj_dim is not None:
        w_embedding = guidance_embedding(args.guidance, unet_config.time_cond_proj_dim).to(weights_dtype)
    pipe.scheduler.set_timesteps(args.steps)
    timestep = pipe.scheduler.timesteps[0]
    control_image = None
    if args.controlnet:
        from PIL import Image

        control_image = Image.open(args.control_image).convert("RGB")

    with torch.inference_mode(), autocast():
        def encode():
            return pipe.encode_prompt(args.prompt, "cpu", 1, False)[0]

        embeddings = encode()

        # One denoising step's networks on the step's batch, as the pipeline runs them: under
        # classifier-free guidance the latents twice and [negative ("") ; prompt] embeddings.
        step_latents, context = latents, embeddings
        if cfg:
            positive, negative = pipe.encode_prompt(args.prompt, "cpu", 1, True)
            step_latents, context = torch.cat([latents] * 2), torch.cat([negative, positive])
        control = None
        if args.controlnet:
            control = pipe.prepare_image(control_image, width, height, 1, 1, "cpu", weights_dtype,
                                         do_classifier_free_guidance=cfg)

        def unet_step():
            residuals = {}
            if control is not None:
                down, mid = pipe.controlnet(step_latents, timestep, encoder_hidden_states=context,
                                            controlnet_cond=control, conditioning_scale=1.0, return_dict=False)
                residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
            return pipe.unet(step_latents, timestep, encoder_hidden_states=context, timestep_cond=w_embedding,
                             return_dict=False, **residuals)[0]

        def decode():
            return pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]

        extra = {"image": control_image} if control_image is not None else {}

        def end_to_end():
            return pipe(args.prompt, num_inference_steps=args.steps, guidance_scale=args.guidance, width=width,
                        height=height, generator=torch.Generator().manual_seed(0), output_type="pil",
                        **extra).images[0]

        wall, cpu = time_stages({"text": encode, "unet": unet_step, "vae": decode, "e2e": end_to_end}, args.runs)

    note = f"torch threads {torch.get_num_threads()}"
    if cfg:
        note += ", classifier-free guidance (UNet step = batch 2)"
    return stage_result(wall, cpu, load_s=load_s, note=note)


# ---- OpenVINO ------------------------------------------------------------------------------------

# The IR files of optimum-cli export openvino (optimum-intel's layout, the one openvino-genai also reads).
IR_FILES = {"text_encoder": "text_encoder/openvino_model.xml", "unet": "unet/openvino_model.xml",
            "vae_decoder": "vae_decoder/openvino_model.xml"}


def ov_config(args):
    """The CPU plugin's settings of every row: the thread count, and f32 or the plugin's own precision."""
    config = {"INFERENCE_NUM_THREADS": args.threads}
    if args.precision == "fp32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    if os.environ.get("PEERS_PERF_COUNT"):
        config["PERF_COUNT"] = True
    return config


def precision_of(compiled):
    chosen = compiled.get_property("INFERENCE_PRECISION_HINT")
    return chosen.get_type_name() if hasattr(chosen, "get_type_name") else str(chosen)


class OvPipeline:
    """The notebook's LCM loop: tokenizer -> text encoder -> LCMScheduler steps over the UNet -> VAE decoder."""

    def __init__(self, args, unet_xml=None, collect_unet_inputs=None):
        import openvino as ov
        from diffusers import LCMScheduler
        from transformers import CLIPTokenizer

        config = ov_config(args)
        core = ov.Core()
        width, height = parse_size(args.size)
        lh, lw = height // 8, width // 8
        start = now()
        self.tokenizer = CLIPTokenizer.from_pretrained(os.path.join(args.model, "tokenizer"))
        self.scheduler = LCMScheduler.from_pretrained(os.path.join(args.model, "scheduler"))

        def compile_static(xml, shapes):
            # Static shapes for one 1-image generation at this size, as optimum-intel's pipe.reshape() sets.
            model = core.read_model(xml)
            model.reshape({name: ov.PartialShape(shape) for name, shape in shapes.items()})
            return core.compile_model(model, "CPU", config)

        unet_model = core.read_model(unet_xml or os.path.join(args.ir, IR_FILES["unet"]))
        hidden = unet_model.input("encoder_hidden_states").get_partial_shape()[2].get_length()
        self.time_cond_dim = unet_model.input("timestep_cond").get_partial_shape()[1].get_length()
        del unet_model
        self.text_encoder = compile_static(os.path.join(args.ir, IR_FILES["text_encoder"]), {"input_ids": [1, 77]})
        self.unet = compile_static(unet_xml or os.path.join(args.ir, IR_FILES["unet"]), {
            "sample": [1, 4, lh, lw], "timestep": [1], "encoder_hidden_states": [1, 77, hidden],
            "timestep_cond": [1, self.time_cond_dim]})
        self.vae_decoder = compile_static(os.path.join(args.ir, IR_FILES["vae_decoder"]),
                                          {"latent_sample": [1, 4, lh, lw]})
        self.load_s = now() - start
        self.requests = {name: getattr(self, name).create_infer_request()
                         for name in ("text_encoder", "unet", "vae_decoder")}
        chosen = self.unet.get_property("INFERENCE_PRECISION_HINT")
        self.chosen_precision = chosen.get_type_name() if hasattr(chosen, "get_type_name") else str(chosen)
        self.collect = collect_unet_inputs
        self.args = args

    def encode(self, prompt):
        ids = self.tokenizer(prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="np").input_ids
        return self.requests["text_encoder"].infer({"input_ids": ids})[0].copy()

    def unet_step(self, latents, timestep, embeddings, w_embedding):
        import numpy as np

        inputs = {"sample": latents, "timestep": np.array([timestep], dtype=np.int64),
                  "encoder_hidden_states": embeddings, "timestep_cond": w_embedding}
        if self.collect is not None:
            self.collect.append({name: x.copy() for name, x in inputs.items()})
        return self.requests["unet"].infer(inputs)[0].copy()

    def decode(self, latents):
        return self.requests["vae_decoder"].infer({"latent_sample": latents / 0.18215})[0].copy()

    def __call__(self, prompt, width, height, seed=0):
        import numpy as np
        import torch

        embeddings = self.encode(prompt)
        w_embedding = guidance_embedding(self.args.guidance, self.time_cond_dim).numpy()
        self.scheduler.set_timesteps(self.args.steps)
        generator = torch.Generator().manual_seed(seed)
        latents = torch.randn((1, 4, height // 8, width // 8), generator=generator) * self.scheduler.init_noise_sigma
        denoised = latents
        for t in self.scheduler.timesteps:
            prediction = self.unet_step(latents.numpy(), int(t), embeddings, w_embedding)
            latents, denoised = self.scheduler.step(torch.from_numpy(prediction), t, latents, generator=generator,
                                                    return_dict=False)
        image = self.decode(denoised.numpy())
        return (np.clip(image / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)[0]


def perf_counts(request, top=8):
    """Per executed kernel type, the milliseconds of the last inference (PERF_COUNT)."""
    totals = {}
    for node in request.profiling_info:
        key = f"{node.node_type}:{node.exec_type}"
        totals[key] = totals.get(key, 0.0) + node.real_time.total_seconds() * 1e3
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return [{"kernel": k, "ms": round(v, 2)} for k, v in ranked]


# The IR files of the --controlnet variant, named as the notebook names them (cn-prepare writes them).
CN_IR_FILES = {"text_encoder": "text_encoder.xml", "controlnet": "controlnet.xml", "unet": "unet_controlnet.xml",
               "vae_decoder": "vae_decoder.xml"}


def infer_inputs(compiled, values):
    """Positional inputs in the element type each port expects (the timestep is f32 in one IR, i64 in another)."""
    return {i: np.asarray(v).astype(port.get_element_type().to_dtype(), copy=False)
            for i, (port, v) in enumerate(zip(compiled.inputs, values))}


class OvControlNetPipeline:
    """The notebook's OVControlNetStableDiffusionPipeline loop: tokenizer -> text encoder -> per LCMScheduler
    step the ControlNet then the UNet with its residuals (a batch of 2 under classifier-free guidance)
    -> VAE decoder."""

    def __init__(self, args, unet_xml=None, controlnet_xml=None, collect=None):
        import openvino as ov
        from diffusers import LCMScheduler
        from PIL import Image
        from transformers import CLIPTokenizer

        config = ov_config(args)
        core = ov.Core()
        width, height = parse_size(args.size)
        lh, lw = height // 8, width // 8
        self.cfg = args.guidance > 1  # SD1.5's UNet has no LCM guidance embedding
        batch = 2 if self.cfg else 1
        start = now()
        self.tokenizer = CLIPTokenizer.from_pretrained(os.path.join(args.ir, "tokenizer"))
        self.scheduler = LCMScheduler.from_pretrained(os.path.join(args.ir, "scheduler"))

        def compile_static(xml, shapes):
            # Static shapes for one image at this size, by input position (the UNet's residual inputs
            # have no names of their own).
            model = core.read_model(xml)
            model.reshape({model.inputs[i]: ov.PartialShape(shape) for i, shape in enumerate(shapes)})
            return core.compile_model(model, "CPU", config)

        text_xml = os.path.join(args.ir, CN_IR_FILES["text_encoder"])
        self.text_encoder = compile_static(text_xml, [[1, 77]])
        hidden = self.text_encoder.outputs[0].get_partial_shape()[2].get_length()
        self.controlnet = compile_static(controlnet_xml or os.path.join(args.ir, CN_IR_FILES["controlnet"]),
                                         [[batch, 4, lh, lw], [], [batch, 77, hidden], [batch, 3, height, width]])
        residual_shapes = [list(out.get_shape()) for out in self.controlnet.outputs]
        self.unet = compile_static(unet_xml or os.path.join(args.ir, CN_IR_FILES["unet"]),
                                   [[batch, 4, lh, lw], [], [batch, 77, hidden]] + residual_shapes)
        self.vae_decoder = compile_static(os.path.join(args.ir, CN_IR_FILES["vae_decoder"]), [[1, 4, lh, lw]])
        self.load_s = now() - start
        self.requests = {name: getattr(self, name).create_infer_request()
                         for name in ("text_encoder", "controlnet", "unet", "vae_decoder")}
        self.chosen_precision = precision_of(self.unet)
        # The control image as diffusers' prepare_image makes it: resized to the output size, /255, NCHW,
        # once per batch row.
        image = Image.open(args.control_image).convert("RGB").resize((width, height), Image.LANCZOS)
        control = (np.asarray(image, dtype=np.float32) / 255.0).transpose(2, 0, 1)[None]
        self.control = np.concatenate([control] * batch)
        self.collect = collect
        self.args = args

    def encode(self, prompt):
        ids = self.tokenizer(prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="np").input_ids
        return self.requests["text_encoder"].infer({0: ids})[0].copy()

    def step_context(self, prompt):
        embeddings = self.encode(prompt)
        return np.concatenate([self.encode(""), embeddings]) if self.cfg else embeddings

    def unet_step(self, latents, timestep, context):
        """ControlNet then UNet on the step's batch; returns the guided noise prediction for one image."""
        sample = np.concatenate([latents] * 2) if self.cfg else latents
        t = np.array(timestep)
        controlnet_inputs = [sample, t, context, self.control]
        residuals = [r.copy() for r in self.requests["controlnet"].infer(
            infer_inputs(self.controlnet, controlnet_inputs)).values()]
        unet_inputs = [sample, t, context] + residuals
        if self.collect is not None:
            self.collect["controlnet"].append(infer_inputs(self.controlnet, controlnet_inputs))
            self.collect["unet"].append(infer_inputs(self.unet, unet_inputs))
        noise = self.requests["unet"].infer(infer_inputs(self.unet, unet_inputs))[0].copy()
        if self.cfg:
            noise = noise[0:1] + self.args.guidance * (noise[1:2] - noise[0:1])
        return noise

    def decode(self, latents):
        return self.requests["vae_decoder"].infer({0: latents / 0.18215})[0].copy()

    def __call__(self, prompt, width, height, seed=0):
        import torch

        context = self.step_context(prompt)
        self.scheduler.set_timesteps(self.args.steps)
        generator = torch.Generator().manual_seed(seed)
        latents = torch.randn((1, 4, height // 8, width // 8), generator=generator) * self.scheduler.init_noise_sigma
        denoised = latents
        for t in self.scheduler.timesteps:
            noise = self.unet_step(latents.numpy(), int(t), context)
            latents, denoised = self.scheduler.step(torch.from_numpy(noise), t, latents, generator=generator,
                                                    return_dict=False)
        image = self.decode(denoised.numpy())
        return (np.clip(image / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)[0]


def run_ov_controlnet(args):
    width, height = parse_size(args.size)
    pipe = OvControlNetPipeline(args, unet_xml=args.unet, controlnet_xml=args.controlnet_int8)
    context = pipe.step_context(args.prompt)
    latents = np.random.default_rng(0).standard_normal((1, 4, height // 8, width // 8)).astype(np.float32)
    pipe.scheduler.set_timesteps(args.steps)
    timestep = int(pipe.scheduler.timesteps[0])
    wall, cpu = time_stages({"text": lambda: pipe.encode(args.prompt),
                             "unet": lambda: pipe.unet_step(latents, timestep, context),
                             "vae": lambda: pipe.decode(latents),
                             "e2e": lambda: pipe(args.prompt, width, height)}, args.runs)
    note = f"inference precision {pipe.chosen_precision}"
    if pipe.cfg:
        note += ", classifier-free guidance (UNet step = ControlNet + UNet, batch 2)"
    if args.unet:
        note += ", UNet and ControlNet from nncf.quantize"
    result = stage_result(wall, cpu, load_s=pipe.load_s, note=note)
    if os.environ.get("PEERS_PERF_COUNT"):
        result["perf_counts"] = {name: perf_counts(req) for name, req in pipe.requests.items()}
    return result


def run_cn_prepare(args):
    """The --controlnet variant's models, from SD1.5 + ControlNet + LCM-LoRA fused (load_torch_controlnet):
    OUT/sd15-lora-fused, a diffusers folder of the fused model (what lcm quantize reads for lcm.c's int8
    rows), and OUT/openvino-ir, the IR converted part by part with ov.convert_model and saved with fp16
    weights (ov.save_model's default), as the notebook does. Written under .partial names, then renamed."""
    import shutil
    from functools import partial

    import openvino as ov
    import torch
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(args.threads)
    width, height = parse_size(args.size)
    pipe = load_torch_controlnet(args, torch.float32)
    fused, ir = os.path.join(args.out, "sd15-lora-fused"), os.path.join(args.out, "openvino-ir")
    if not os.path.isfile(os.path.join(fused, "model_index.json")):
        shutil.rmtree(fused + ".partial", ignore_errors=True)
        StableDiffusionPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                unet=pipe.unet, scheduler=pipe.scheduler, safety_checker=None,
                                feature_extractor=None, requires_safety_checker=False).save_pretrained(
            fused + ".partial", safe_serialization=True)
        # The tokenizer as the model has it: transformers 5 saves tokenizer.json, lcm.c reads vocab.json
        # and merges.txt (fusing the LoRA does not touch the tokenizer).
        shutil.copytree(os.path.join(args.model, "tokenizer"), os.path.join(fused + ".partial", "tokenizer"),
                        dirs_exist_ok=True)
        os.replace(fused + ".partial", fused)
    if os.path.isfile(os.path.join(ir, CN_IR_FILES["vae_decoder"])):
        return {"fused": fused, "ir": ir}
    partial_ir = ir + ".partial"
    shutil.rmtree(partial_ir, ignore_errors=True)
    os.makedirs(partial_ir)
    pipe.tokenizer.save_pretrained(os.path.join(partial_ir, "tokenizer"))
    pipe.scheduler.save_pretrained(os.path.join(partial_ir, "scheduler"))
    hidden = pipe.text_encoder.config.hidden_size
    batch = 2 if uses_cfg(args, pipe.unet.config) else 1  # the step's batch (shapes are set at compile anyway)
    example = {"sample": torch.randn((batch, 4, height // 8, width // 8)),
               "timestep": torch.tensor(1, dtype=torch.float32),
               "encoder_hidden_states": torch.randn((batch, 77, hidden)),
               "controlnet_cond": torch.randn((batch, 3, height, width))}

    class UnetWithResiduals(torch.nn.Module):
        """The UNet with the ControlNet's residuals as inputs (what the notebook's UnetWrapper exposes)."""

        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, encoder_hidden_states, down_block_additional_residuals,
                    mid_block_additional_residual):
            return self.unet(sample, timestep, encoder_hidden_states,
                             down_block_additional_residuals=list(down_block_additional_residuals),
                             mid_block_additional_residual=mid_block_additional_residual, return_dict=False)[0]

    class VaeDecoder(torch.nn.Module):
        def __init__(self, vae):
            super().__init__()
            self.vae = vae

        def forward(self, latents):
            return self.vae.decode(latents, return_dict=False)[0]

    class TextEncoder(torch.nn.Module):
        def __init__(self, text_encoder):
            super().__init__()
            self.text_encoder = text_encoder

        def forward(self, input_ids):
            return self.text_encoder(input_ids=input_ids, return_dict=False)[0]

    def save(model, name):
        ov.save_model(model, os.path.join(partial_ir, CN_IR_FILES[name]))  # fp16 weights, as the notebook

    with torch.no_grad():
        controlnet = pipe.controlnet.eval()
        down, mid = controlnet(**example, return_dict=False)
        controlnet.forward = partial(controlnet.forward, return_dict=False)
        save(ov.convert_model(controlnet, example_input=example), "controlnet")
        unet_example = {"sample": example["sample"], "timestep": example["timestep"],
                        "encoder_hidden_states": example["encoder_hidden_states"],
                        "down_block_additional_residuals": tuple(down), "mid_block_additional_residual": mid}
        save(ov.convert_model(UnetWithResiduals(pipe.unet.eval()), example_input=unet_example), "unet")
        save(ov.convert_model(VaeDecoder(pipe.vae.eval()), example_input=example["sample"][:1]), "vae_decoder")
        # The notebook traces CLIPTextModel with TorchScript; with transformers 5 that trace fails
        # (README), so the text encoder goes through torch.export, which ov.convert_model also takes.
        ids = torch.ones((1, 77), dtype=torch.long)
        exported = torch.export.export(TextEncoder(pipe.text_encoder.eval()), (ids,))
        save(ov.convert_model(exported), "text_encoder")
    os.replace(partial_ir, ir)
    return {"fused": fused, "ir": ir}


def run_ov(args):
    if args.control_image:
        return run_ov_controlnet(args)
    width, height = parse_size(args.size)
    pipe = OvPipeline(args, unet_xml=args.unet)
    embeddings = pipe.encode(args.prompt)
    latents = np.random.default_rng(0).standard_normal((1, 4, height // 8, width // 8)).astype(np.float32)
    w_embedding = guidance_embedding(args.guidance, pipe.time_cond_dim).numpy()
    pipe.scheduler.set_timesteps(args.steps)
    timestep = int(pipe.scheduler.timesteps[0])
    wall, cpu = time_stages({"text": lambda: pipe.encode(args.prompt),
                             "unet": lambda: pipe.unet_step(latents, timestep, embeddings, w_embedding),
                             "vae": lambda: pipe.decode(latents),
                             "e2e": lambda: pipe(args.prompt, width, height)}, args.runs)
    result = stage_result(wall, cpu, load_s=pipe.load_s,
                          note=f"inference precision {pipe.chosen_precision}"
                          + (", UNet from nncf.quantize" if args.unet else ""))
    if os.environ.get("PEERS_PERF_COUNT"):
        result["perf_counts"] = {name: perf_counts(req) for name, req in pipe.requests.items()}
    return result


def quantize_like_notebook(model, inputs):
    import nncf

    return nncf.quantize(
        model=model,
        calibration_dataset=nncf.Dataset(inputs),
        subset_size=len(inputs),
        model_type=nncf.ModelType.TRANSFORMER,
        advanced_parameters=nncf.AdvancedQuantizationParameters(disable_bias_correction=True))


def save_atomically(model, out):
    import openvino as ov

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    temporary = out[:-4] + ".partial.xml"
    ov.save_model(model, temporary)
    os.replace(temporary[:-4] + ".bin", out[:-4] + ".bin")
    os.replace(temporary, out)


def run_ov_quantize(args):
    import openvino as ov

    width, height = parse_size(args.size)
    captions = [line.strip() for line in open(args.captions, encoding="utf-8")
                if line.strip() and not line.startswith("#")][:args.samples]
    if args.control_image:
        if not args.controlnet_int8:
            sys.exit("peers.py ov-quantize: --control-image needs --controlnet-int8 (the int8 ControlNet .xml to write)")
        # The notebook quantizes both networks of the loop, each on the inputs it saw in the runs.
        collected = {"controlnet": [], "unet": []}
        pipe = OvControlNetPipeline(args, collect=collected)
        for i, caption in enumerate(captions):
            pipe(caption, width, height, seed=i)
        del pipe
        core = ov.Core()
        controlnet_out = args.controlnet_int8
        save_atomically(quantize_like_notebook(core.read_model(os.path.join(args.ir, CN_IR_FILES["controlnet"])),
                                               collected["controlnet"]), controlnet_out)
        save_atomically(quantize_like_notebook(core.read_model(os.path.join(args.ir, CN_IR_FILES["unet"])),
                                               collected["unet"]), args.out)
        return {"captions": len(captions), "unet_inputs": len(collected["unet"]), "out": args.out,
                "controlnet_out": controlnet_out}
    collected = []
    pipe = OvPipeline(args, collect_unet_inputs=collected)
    for i, caption in enumerate(captions):
        pipe(caption, width, height, seed=i)
    del pipe
    unet = ov.Core().read_model(os.path.join(args.ir, IR_FILES["unet"]))
    save_atomically(quantize_like_notebook(unet, collected), args.out)
    return {"captions": len(captions), "unet_inputs": len(collected), "out": args.out}


# ---- the table -----------------------------------------------------------------------------------

def run_table(args):
    rows = [json.loads(line) for line in open(args.results, encoding="utf-8") if line.strip()]
    lines = ["| system | precision | text encoding s | UNet step s | VAE decode s | end to end s | end to end CPU s | "
             "load s | peak RSS GB | notes |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            why = r["error"] if r["error"].startswith("not run") else "FAILED: " + r["error"]
            lines.append(f"| {r['system']} | {r['precision']} | | | | | | | | {why} |")
            continue
        cpu = r.get("end_to_end_cpu_s")
        lines.append("| {} | {} | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {} | {:.1f} | {:.2f} | {} |".format(
            r["system"], r["precision"], r["text_encoding_s"], r["unet_step_s"], r["vae_decode_s"],
            r["end_to_end_s"], "" if cpu is None else f"{cpu:.3f}", r["load_s"], r["peak_rss_bytes"] / 1e9,
            r.get("note", "")))
    print("\n".join(lines))
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["torch", "ov", "ov-quantize", "cn-prepare", "table"])
    parser.add_argument("--model", help="diffusers model folder")
    parser.add_argument("--ir", help="folder that optimum-cli export openvino wrote")
    parser.add_argument("--unet", help="ov: UNet IR to use instead of IR/unet.xml (the NNCF one)")
    parser.add_argument("--out", help="ov-quantize: the int8 UNet .xml to write; cn-prepare: the folder")
    parser.add_argument("--controlnet", help="torch, cn-prepare: the ControlNetModel folder (--controlnet variant)")
    parser.add_argument("--lora", help="torch, cn-prepare: the LCM-LoRA .safetensors fused into the UNet")
    parser.add_argument("--control-image", help="the control image of the --controlnet variant")
    parser.add_argument("--controlnet-int8", help="ov: ControlNet IR to use instead of the converted one (NNCF); "
                        "ov-quantize with --control-image: the int8 ControlNet .xml to write")
    parser.add_argument("--precision", default="fp32", help="torch: fp32, bf16, bf16-autocast; ov: fp32 or default")
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--guidance", type=float, default=8.5)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--prompt", default="a beautiful pink unicorn, 8k")
    parser.add_argument("--captions", help="ov-quantize: calibration captions, one per line")
    parser.add_argument("--samples", type=int, default=4, help="ov-quantize: how many captions")
    parser.add_argument("--results", help="table: JSON lines, one per system")
    args = parser.parse_args()
    run = {"torch": run_torch, "ov": run_ov, "ov-quantize": run_ov_quantize, "cn-prepare": run_cn_prepare,
           "table": run_table}[args.command]
    result = run(args)
    if result is not None:
        result["peak_rss_bytes"] = peak_rss_bytes()
        print(json.dumps(result))


if __name__ == "__main__":
    main()
