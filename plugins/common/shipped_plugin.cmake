# cx_shipped_plugin(NAME) -- one shipped plugin folder (plugins/NAME/): builds
# NAME.so from NAME.c plus the shared helpers (common/cx_util.c, libc only) and
# its GoogleTest NAME_test.cc, which dlopen()s the built .so (its path is the
# compile definition CX_PLUGIN_PATH) and builds inputs with cryptex_policy.
function(cx_shipped_plugin name)
  cx_add_plugin(${name} ${CMAKE_CURRENT_SOURCE_DIR}/${name}.c
                ${PROJECT_SOURCE_DIR}/plugins/common/cx_util.c)
  target_include_directories(${name}_plugin PRIVATE ${PROJECT_SOURCE_DIR}/plugins/common)
  set_target_properties(${name}_plugin PROPERTIES C_STANDARD 11 C_STANDARD_REQUIRED ON
                                                  C_EXTENSIONS OFF)

  cx_add_test(${name}_test ${CMAKE_CURRENT_SOURCE_DIR}/${name}_test.cc
              ${PROJECT_SOURCE_DIR}/plugins/plugin_test_util.cc)
  target_link_libraries(${name}_test PRIVATE cryptex_policy)
  target_include_directories(${name}_test PRIVATE ${PROJECT_SOURCE_DIR}/plugins)
  target_compile_definitions(${name}_test PRIVATE CX_PLUGIN_PATH="$<TARGET_FILE:${name}_plugin>")
  add_dependencies(${name}_test ${name}_plugin)
endfunction()
