# Runs the commands STEP_1, STEP_2, ... (each a list: a program and its arguments) in order, after
# emptying the directory CLEAN when one is given, and fails at the first that does not exit 0 or
# whose output does not match its EXPECT_<n> regex, when there is one:
#   cmake -DCLEAN=dir "-DSTEP_1=prog;a;b" "-DEXPECT_1=regex" "-DSTEP_2=prog;c" -P run_steps.cmake
if(DEFINED CLEAN)
  file(REMOVE_RECURSE "${CLEAN}")
  file(MAKE_DIRECTORY "${CLEAN}")
endif()
set(step 1)
while(DEFINED STEP_${step})
  message("== step ${step}: ${STEP_${step}}")
  execute_process(COMMAND ${STEP_${step}} OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
  message("${out}${err}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "step ${step} exited with ${rc}")
  endif()
  if(DEFINED EXPECT_${step} AND NOT "${out}${err}" MATCHES "${EXPECT_${step}}")
    message(FATAL_ERROR "the output of step ${step} does not match '${EXPECT_${step}}'")
  endif()
  math(EXPR step "${step} + 1")
endwhile()
