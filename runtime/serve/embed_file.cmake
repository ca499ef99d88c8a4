# cmake -DINPUT=file -DOUTPUT=file.cpp -P embed_file.cmake: writes a C++ source defining
# parafuse::chat_page() as the file's bytes (hex, so any content survives).
file(READ ${INPUT} bytes HEX)
string(LENGTH "${bytes}" n_hex)
math(EXPR n "${n_hex} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," body "${bytes}")
file(WRITE ${OUTPUT}
  "// Generated from ${INPUT} by embed_file.cmake; do not edit.\n"
  "#include <string_view>\n"
  "namespace parafuse {\n"
  "namespace { const char kBytes[] = {${body} 0}; }\n"
  "std::string_view chat_page() { return {kBytes, ${n}}; }\n"
  "}  // namespace parafuse\n")
