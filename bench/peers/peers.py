#!/usr/bin/env python3
"""The peers of lcm.c, timed the way `lcm bench` times lcm.c (bench/peers/run.sh drives this file).

Each subcommand runs in its own process, so that the peak RSS it reports is its own:
  torch       PyTorch + diffusers' LatentConsistencyModelPipeline, fp32 / bf16 weights / fp32 weights
              under torch.autocast(bfloat16)
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


def now():
    return time.perf_counter()


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def timed(fn, runs):
    """Median seconds of `runs` calls of fn after one warm-up call (the warm-up's result is returned)."""
    result = fn()
    times = []
    for _ in range(runs):
        start = now()
        fn()
        times.append(now() - start)
    return result, statistics.median(times), times


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

def run_torch(args):
    import contextlib

    import torch
    from diffusers import LatentConsistencyModelPipeline

    torch.set_num_threads(args.threads)
    weights_dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.precision == "bf16-autocast" \
        else contextlib.nullcontext
    width, height = parse_size(args.size)

    start = now()
    pipe = LatentConsistencyModelPipeline.from_pretrained(
        args.model, torch_dtype=weights_dtype, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    load_s = now() - start
    pipe.set_progress_bar_config(disable=True)

    unet_config = pipe.unet.config
    latents = torch.randn((1, unet_config.in_channels, height // 8, width // 8),
                          generator=torch.Generator().manual_seed(0)).to(weights_dtype)
    w_embedding = guidance_embedding(args.guidance, unet_config.time_cond_proj_dim).to(weights_dtype)
    pipe.scheduler.set_timesteps(args.steps)
    timestep = pipe.scheduler.timesteps[0]

    with torch.inference_mode(), autocast():
        def encode():
            return pipe.encode_prompt(args.prompt, "cpu", 1, False)[0]

        embeddings, text_s, _ = timed(encode, args.runs)

        def unet_step():
            return pipe.unet(latents, timestep, encoder_hidden_states=embeddings, timestep_cond=w_embedding,
                             return_dict=False)[0]

        _, unet_s, _ = timed(unet_step, args.runs)

        def decode():
            return pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]

        _, vae_s, _ = timed(decode, args.runs)

        def end_to_end():
            return pipe(args.prompt, num_inference_steps=args.steps, guidance_scale=args.guidance, width=width,
                        height=height, generator=torch.Generator().manual_seed(0), output_type="pil").images[0]

        _, e2e_s, _ = timed(end_to_end, args.runs)

    return {"text_encoding_s": text_s, "unet_step_s": unet_s, "vae_decode_s": vae_s, "end_to_end_s": e2e_s,
            "load_s": load_s, "note": f"torch threads {torch.get_num_threads()}"}


# ---- OpenVINO ------------------------------------------------------------------------------------

# The IR files of optimum-cli export openvino (optimum-intel's layout, the one openvino-genai also reads).
IR_FILES = {"text_encoder": "text_encoder/openvino_model.xml", "unet": "unet/openvino_model.xml",
            "vae_decoder": "vae_decoder/openvino_model.xml"}


class OvPipeline:
    """The notebook's LCM loop: tokenizer -> text encoder -> LCMScheduler steps over the UNet -> VAE decoder."""

    def __init__(self, args, unet_xml=None, collect_unet_inputs=None):
        import openvino as ov
        from diffusers import LCMScheduler
        from transformers import CLIPTokenizer

        config = {"INFERENCE_NUM_THREADS": args.threads}
        if args.precision == "fp32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if os.environ.get("PEERS_PERF_COUNT"):
            config["PERF_COUNT"] = True
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


def run_ov(args):
    import numpy as np

    width, height = parse_size(args.size)
    pipe = OvPipeline(args, unet_xml=args.unet)
    embeddings, text_s, _ = timed(lambda: pipe.encode(args.prompt), args.runs)
    latents = np.random.default_rng(0).standard_normal((1, 4, height // 8, width // 8)).astype(np.float32)
    w_embedding = guidance_embedding(args.guidance, pipe.time_cond_dim).numpy()
    pipe.scheduler.set_timesteps(args.steps)
    timestep = int(pipe.scheduler.timesteps[0])
    _, unet_s, _ = timed(lambda: pipe.unet_step(latents, timestep, embeddings, w_embedding), args.runs)
    _, vae_s, _ = timed(lambda: pipe.decode(latents), args.runs)
    _, e2e_s, _ = timed(lambda: pipe(args.prompt, width, height), args.runs)
    result = {"text_encoding_s": text_s, "unet_step_s": unet_s, "vae_decode_s": vae_s, "end_to_end_s": e2e_s,
              "load_s": pipe.load_s,
              "note": f"inference precision {pipe.chosen_precision}" + (", UNet from nncf.quantize" if args.unet else "")}
    if os.environ.get("PEERS_PERF_COUNT"):
        result["perf_counts"] = {name: perf_counts(req) for name, req in pipe.requests.items()}
    return result


def run_ov_quantize(args):
    import nncf
    import openvino as ov

    width, height = parse_size(args.size)
    captions = [line.strip() for line in open(args.captions, encoding="utf-8")
                if line.strip() and not line.startswith("#")][:args.samples]
    collected = []
    pipe = OvPipeline(args, collect_unet_inputs=collected)
    for i, caption in enumerate(captions):
        pipe(caption, width, height, seed=i)
    del pipe
    unet = ov.Core().read_model(os.path.join(args.ir, IR_FILES["unet"]))
    quantized = nncf.quantize(
        model=unet,
        calibration_dataset=nncf.Dataset(collected),
        subset_size=len(collected),
        model_type=nncf.ModelType.TRANSFORMER,
        advanced_parameters=nncf.AdvancedQuantizationParameters(disable_bias_correction=True))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    temporary = args.out[:-4] + ".partial.xml"
    ov.save_model(quantized, temporary)
    os.replace(temporary[:-4] + ".bin", args.out[:-4] + ".bin")
    os.replace(temporary, args.out)
    return {"captions": len(captions), "unet_inputs": len(collected), "out": args.out}


# ---- the table -----------------------------------------------------------------------------------

def run_table(args):
    rows = [json.loads(line) for line in open(args.results, encoding="utf-8") if line.strip()]
    lines = ["| system | precision | text encoding s | UNet step s | VAE decode s | end to end s | load s | "
             "peak RSS GB | notes |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            why = r["error"] if r["error"].startswith("not run") else "FAILED: " + r["error"]
            lines.append(f"| {r['system']} | {r['precision']} | | | | | | | {why} |")
            continue
        lines.append("| {} | {} | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {:.1f} | {:.2f} | {} |".format(
            r["system"], r["precision"], r["text_encoding_s"], r["unet_step_s"], r["vae_decode_s"],
            r["end_to_end_s"], r["load_s"], r["peak_rss_bytes"] / 1e9, r.get("note", "")))
    print("\n".join(lines))
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["torch", "ov", "ov-quantize", "table"])
    parser.add_argument("--model", help="diffusers model folder")
    parser.add_argument("--ir", help="folder that optimum-cli export openvino wrote")
    parser.add_argument("--unet", help="ov: UNet IR to use instead of IR/unet.xml (the NNCF one)")
    parser.add_argument("--out", help="ov-quantize: the int8 UNet .xml to write")
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
    run = {"torch": run_torch, "ov": run_ov, "ov-quantize": run_ov_quantize,
           "table": run_table}[args.command]
    result = run(args)
    if result is not None:
        result["peak_rss_bytes"] = peak_rss_bytes()
        print(json.dumps(result))


if __name__ == "__main__":
    main()
