# Writes OUT: a C++ file defining vibrant::server::kChatPageHtml as the bytes
# of IN (hex, so that any content embeds).
file(READ ${IN} hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," bytes "${hex}")
file(WRITE ${OUT} "// Generated from chat.html by embed_page.cmake.\nnamespace vibrant::server {\nextern const char kChatPageHtml[];\nconst char kChatPageHtml[] = {${bytes} 0};\n}  // namespace vibrant::server\n")
