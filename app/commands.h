// Subcommands of the `lcm` binary: one file each (app/cmd_NAME.c). Each returns the process exit
// code: 0 success, 1 runtime failure, 2 bad usage or bad input.
#ifndef LCM_APP_COMMANDS_H
#define LCM_APP_COMMANDS_H

int cmd_info(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_pull(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_preprocess(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_cache(int argc, char **argv);

#endif
