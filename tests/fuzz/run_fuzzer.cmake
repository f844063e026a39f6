# Runs one fuzz target for a bounded time on a scratch copy of its seeds (ctest calls this):
#   cmake -DFUZZER=... -DSEEDS=corpus/dir -DWORK=scratch/dir -DSECONDS=20 -DMAX_LEN=4096
#         [-DCRASHES=crashes/dir] [-DSEED_TOOL=make_control_block_seeds] -P run_fuzzer.cmake
# libFuzzer adds every new input to its first corpus directory, hence the copy. A crash
# leaves its input in WORK/artifacts/ and fails the test. Inputs kept in CRASHES (fixed
# bugs) are read as a second corpus directory: they replay before any fuzzing.
#
# -timeout is wall-clock time per input. Every input here runs in well under a second, but
# on a shared, overloaded machine (a load of 16 on 2 CPUs) 5 s gave false hangs: 30 s still
# catches a real endless loop.
foreach(var FUZZER SEEDS WORK SECONDS MAX_LEN)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_fuzzer.cmake: -D${var}=... is missing")
  endif()
endforeach()

file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/corpus ${WORK}/artifacts)
file(COPY ${SEEDS}/ DESTINATION ${WORK}/corpus)
if(DEFINED SEED_TOOL)
  # Fresh seeds of the current layout, next to the checked-in ones.
  execute_process(COMMAND ${SEED_TOOL} ${WORK}/corpus COMMAND_ERROR_IS_FATAL ANY)
endif()

set(corpora ${WORK}/corpus)
if(DEFINED CRASHES AND IS_DIRECTORY ${CRASHES})
  list(APPEND corpora ${CRASHES})
endif()

execute_process(
  COMMAND ${FUZZER}
    -max_total_time=${SECONDS}
    -timeout=30
    -rss_limit_mb=2048
    -max_len=${MAX_LEN}
    -print_final_stats=1
    -artifact_prefix=${WORK}/artifacts/
    ${corpora}
  RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  file(GLOB found ${WORK}/artifacts/*)
  message(FATAL_ERROR "${FUZZER} failed (${result}). Inputs: ${found}\n"
    "Reproduce with: ${FUZZER} INPUT")
endif()
