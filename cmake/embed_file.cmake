# SPDX-License-Identifier: Apache-2.0
# cmake -DINPUT=model.sif -DOUTPUT=model_data.c -DSYMBOL=name -P cmake/embed_file.cmake
# Writes a C source defining `const unsigned char SYMBOL[]` (64-byte aligned, so a .sif model can
# be used in place without a copy) and `const size_t SYMBOL_size`. Run at build time by
# siflow_embed_file() in examples/embed_c/CMakeLists.txt; needs nothing but CMake.
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" digits)
math(EXPR size "${digits} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x..,){16})" "\\1\n  " bytes "${bytes}")
file(WRITE "${OUTPUT}.tmp"
  "/* Generated from ${INPUT} by cmake/embed_file.cmake. */\n"
  "#include <stddef.h>\n"
  "_Alignas(64) const unsigned char ${SYMBOL}[${size}] = {\n  ${bytes}\n};\n"
  "const size_t ${SYMBOL}_size = ${size};\n")
file(RENAME "${OUTPUT}.tmp" "${OUTPUT}")
