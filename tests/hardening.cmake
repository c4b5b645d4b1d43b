# Hostile-input hardening (issue "Hostile input hardening: fuzzing, corruption
# campaigns and sanitizers"): adversarial re-sealed images, extraction
# safety, the corruption campaign, and the libFuzzer targets.
# Included from tests/CMakeLists.txt:  include(${CMAKE_CURRENT_SOURCE_DIR}/hardening.cmake)
#
#   tests/adversarial/  surgery (re-sealing), walk (bounded full walk), gen
#                       (hostile cases), adversarial_test, extract_safety_test
#   tests/campaign/     cryptex_campaign (single-byte flip campaign) + smoke test
#   tests/fuzz/         fuzz targets (CRYPTEX_FUZZ=ON, clang) or, otherwise,
#                       the same harnesses replaying the committed corpora
include_guard(GLOBAL)
set(CX_HARD ${CMAKE_CURRENT_LIST_DIR})

if(CRYPTEX_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "CRYPTEX_FUZZ=ON needs clang: configure with "
                        "-DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_C_COMPILER=clang-14 "
                        "(see tests/fuzz/README.md)")
  endif()
  # Coverage instrumentation for the code under test; ASan+UBSan everywhere
  # the fuzz targets link (PUBLIC, so that every consumer agrees).
  target_compile_options(cryptex_image PRIVATE -fsanitize=fuzzer-no-link)
  if(NOT CRYPTEX_SANITIZE)
    target_compile_options(cryptex_image PUBLIC -fsanitize=address,undefined
                           -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
    target_link_options(cryptex_image PUBLIC -fsanitize=address,undefined)
  endif()
endif()

# ---- test support: image surgery, bounded walk, adversarial cases ----------
add_library(cryptex_hardening STATIC
  ${CX_HARD}/adversarial/surgery.cc
  ${CX_HARD}/adversarial/walk.cc
  ${CX_HARD}/adversarial/gen.cc)
target_include_directories(cryptex_hardening PUBLIC ${CX_HARD}/adversarial)
target_link_libraries(cryptex_hardening PUBLIC cryptex_image)
if(CRYPTEX_FUZZ)
  target_compile_options(cryptex_hardening PRIVATE -fsanitize=fuzzer-no-link)
endif()

cx_add_test(adversarial_test ${CX_HARD}/adversarial/adversarial_test.cc
            ${CX_HARD}/../fs/lib/test_util.cc)
target_link_libraries(adversarial_test PRIVATE cryptex_hardening)
# Runs `cryptex verify` and mounts with cryptexfs on the hostile cases.
add_dependencies(adversarial_test cryptex)
if(TARGET cryptexfs)
  add_dependencies(adversarial_test cryptexfs)
endif()

cx_add_test(extract_safety_test ${CX_HARD}/adversarial/extract_safety_test.cc
            ${CX_HARD}/../fs/lib/test_util.cc)
target_link_libraries(extract_safety_test PRIVATE cryptex_hardening)
add_dependencies(extract_safety_test cryptex)
target_compile_definitions(extract_safety_test PRIVATE CRYPTEX_CLI_PATH="$<TARGET_FILE:cryptex>")

add_executable(cryptex_adversarial_gen ${CX_HARD}/adversarial/gen_main.cc)
target_link_libraries(cryptex_adversarial_gen PRIVATE cryptex_hardening)

# ---- corruption campaign -----------------------------------------------------
add_executable(cryptex_campaign ${CX_HARD}/campaign/campaign.cc)
target_link_libraries(cryptex_campaign PRIVATE cryptex_hardening)
target_include_directories(cryptex_campaign PRIVATE ${PROJECT_SOURCE_DIR}/cli)  # exit_codes.h
add_test(NAME campaign_smoke
         COMMAND cryptex_campaign --generate --seed 1 --flips 200 --timeout-ms 20000)
set_tests_properties(campaign_smoke PROPERTIES TIMEOUT 300 LABELS hardening)
if(TARGET cryptexfs)
  # The same through real mounts of each corrupted image (needs /dev/fuse and
  # root or fusermount3; skipped otherwise).
  add_test(NAME campaign_mount_smoke
           COMMAND cryptex_campaign --generate --seed 2 --flips 39 --timeout-ms 20000
                   --mount-with $<TARGET_FILE:cryptexfs>)
  set_tests_properties(campaign_mount_smoke PROPERTIES TIMEOUT 300 LABELS hardening
                       SKIP_RETURN_CODE 77)
  # A driver that dies (sanitizer exit, silent exit, false refusal, non-zero
  # exit after unmount) is a crash that fails the campaign, never a refusal.
  add_test(NAME campaign_daemon_death
           COMMAND sh ${CX_HARD}/campaign/daemon_death_test.sh $<TARGET_FILE:cryptex_campaign>
                   $<TARGET_FILE:cryptexfs>)
  set_tests_properties(campaign_daemon_death PROPERTIES TIMEOUT 600 LABELS hardening
                       SKIP_RETURN_CODE 77)
endif()

# ---- fuzz targets ------------------------------------------------------------
add_executable(cryptex_fuzz_make_corpus ${CX_HARD}/fuzz/make_corpus.cc)
target_link_libraries(cryptex_fuzz_make_corpus PRIVATE cryptex_hardening)

set(CX_FUZZ_TARGETS superblock manifest image image_resealed delta feed_index)
foreach(t ${CX_FUZZ_TARGETS})
  if(CRYPTEX_FUZZ)
    add_executable(fuzz_${t} ${CX_HARD}/fuzz/fuzz_${t}.cc ${CX_HARD}/fuzz/fuzz_support.cc)
    target_compile_options(fuzz_${t} PRIVATE -fsanitize=fuzzer)
    target_link_options(fuzz_${t} PRIVATE -fsanitize=fuzzer)
    # Regression: every committed seed once (-runs=0 executes the corpus and stops).
    add_test(NAME fuzz_${t}_corpus
             COMMAND fuzz_${t} -runs=0 ${CX_HARD}/fuzz/corpus/${t})
  else()
    # Same harness, plain main(): replays the committed corpus (also under
    # CRYPTEX_SANITIZE / CRYPTEX_TSAN builds).
    add_executable(fuzz_${t} ${CX_HARD}/fuzz/fuzz_${t}.cc ${CX_HARD}/fuzz/fuzz_support.cc
                   ${CX_HARD}/fuzz/replay_main.cc)
    add_test(NAME fuzz_${t}_corpus COMMAND fuzz_${t} ${CX_HARD}/fuzz/corpus/${t})
  endif()
  target_link_libraries(fuzz_${t} PRIVATE cryptex_hardening)
  set_tests_properties(fuzz_${t}_corpus PROPERTIES TIMEOUT 300 LABELS hardening)
endforeach()
# The feed index parsers live in cryptex_feed (feed/).
target_link_libraries(fuzz_feed_index PRIVATE cryptex_feed)
if(CRYPTEX_FUZZ)
  target_compile_options(cryptex_feed PRIVATE -fsanitize=fuzzer-no-link)
endif()
