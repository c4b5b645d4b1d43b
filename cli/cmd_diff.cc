// cryptex diff OLD NEW | cryptex diff OLD [--patch P ...] --to-patch P
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <cstdio>
#include <string>
#include <vector>

#include "cli.h"
#include "json.h"
#include "sha256.h"
#include "terminal.h"
#include "tree_diff.h"

namespace cryptex::cli {

namespace {

std::string Octal(uint32_t mode) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", mode & 07777);
  return buf;
}

std::string Owner(const InodeInfo& in) {
  return std::to_string(in.uid) + ":" + std::to_string(in.gid);
}

std::string Device(uint64_t rdev) {
  return std::to_string(major(rdev)) + "," + std::to_string(minor(rdev));
}

// " (content, mode 0644->0755, ...)": what changed on a path, for people.
std::string Details(const TreeChange& c, bool tty) {
  const InodeInfo& a = c.old_info;
  const InodeInfo& b = c.new_info;
  std::vector<std::string> parts;
  if (c.what & kChangeType) {
    parts.push_back(std::string("type ") + FileTypeName(a.mode) + "->" + FileTypeName(b.mode));
  }
  if (c.what & kChangeContent) parts.push_back("content");
  if (c.what & kChangeMode) parts.push_back("mode " + Octal(a.mode) + "->" + Octal(b.mode));
  if (c.what & kChangeOwner) parts.push_back("owner " + Owner(a) + "->" + Owner(b));
  if (c.what & kChangeXattrs) {
    std::string x = "xattrs";
    for (const auto& n : c.xattrs_added) x += " +" + ForTerminal(n, tty);
    for (const auto& n : c.xattrs_removed) x += " -" + ForTerminal(n, tty);
    for (const auto& n : c.xattrs_changed) x += " ~" + ForTerminal(n, tty);
    parts.push_back(x);
  }
  if (c.what & kChangeMtime) parts.push_back("mtime");
  if (c.what & kChangeTarget) parts.push_back("target");
  if (c.what & kChangeRdev) parts.push_back("device " + Device(a.rdev) + "->" + Device(b.rdev));
  if (c.what & kChangeLinks) {
    parts.push_back("links " + std::to_string(c.old_links.size()) + "->" +
                    std::to_string(c.new_links.size()));
  }
  std::string s;
  for (const auto& p : parts) s += (s.empty() ? " (" : ", ") + p;
  return s + ")";
}

int PrintHuman(const std::vector<TreeChange>& changes) {
  const bool tty = StdoutIsTerminal();
  for (const auto& c : changes) {
    std::string line;
    switch (c.kind) {
      case TreeChange::Kind::kAdded:
        line = "+ " + ForTerminal(c.path, tty);
        break;
      case TreeChange::Kind::kRemoved:
        line = "- " + ForTerminal(c.path, tty);
        break;
      case TreeChange::Kind::kChanged:
        line = "M " + ForTerminal(c.path, tty) + Details(c, tty);
        break;
    }
    line += '\n';
    if (std::fwrite(line.data(), 1, line.size(), stdout) != line.size()) {
      return Fail("diff", Status::FromErrno(errno, "standard output"));
    }
  }
  if (std::fflush(stdout) != 0) return Fail("diff", Status::FromErrno(errno, "standard output"));
  return kExitOk;
}

Json OldNew(Json a, Json b) { return Json{{"old", std::move(a)}, {"new", std::move(b)}}; }

Json Mtime(const InodeInfo& in) { return Json{{"sec", in.mtime_sec}, {"nsec", in.mtime_nsec}}; }

// One change of `cryptex diff --json` (a stable structure; keys in this order):
//   "path": "/a/b"
//   "change": "added" | "removed" | "modified"
//   "type": "file" | "dir" | ... (added, removed), {"old": T, "new": T} (modified)
// and for "modified":
//   "what": the names of what changed, in this order, a subset of
//     type, content, mode, owner, xattrs, mtime, target, device, links
//   and under each name but "type" its details: content {"old"/"new":
//   {"size", "digest" (hex)}}, mode {"old"/"new": "0644"}, owner {"old"/"new":
//   {"uid", "gid"}}, xattrs {"added", "removed", "changed": [names]}, mtime
//   {"old"/"new": {"sec", "nsec"}}, target {"old"/"new": "..."}, device
//   {"old"/"new": {"major", "minor"}}, links {"old"/"new": [paths]}.
Json ChangeJson(const TreeChange& c) {
  Json j;
  j["path"] = c.path;
  const InodeInfo& a = c.old_info;
  const InodeInfo& b = c.new_info;
  switch (c.kind) {
    case TreeChange::Kind::kAdded:
      j["change"] = "added";
      j["type"] = FileTypeName(b.mode);
      return j;
    case TreeChange::Kind::kRemoved:
      j["change"] = "removed";
      j["type"] = FileTypeName(a.mode);
      return j;
    case TreeChange::Kind::kChanged:
      break;
  }
  j["change"] = "modified";
  j["type"] = OldNew(FileTypeName(a.mode), FileTypeName(b.mode));
  j["what"] = Json::array();
  auto has = [&](uint32_t bit, const char* name) {
    if (c.what & bit) j["what"].push_back(name);
    return (c.what & bit) != 0;
  };
  has(kChangeType, "type");
  if (has(kChangeContent, "content")) {
    j["content"] = OldNew(Json{{"size", a.size}, {"digest", HexEncode(a.digest)}},
                          Json{{"size", b.size}, {"digest", HexEncode(b.digest)}});
  }
  if (has(kChangeMode, "mode")) j["mode"] = OldNew(Octal(a.mode), Octal(b.mode));
  if (has(kChangeOwner, "owner")) {
    j["owner"] = OldNew(Json{{"uid", a.uid}, {"gid", a.gid}}, Json{{"uid", b.uid}, {"gid", b.gid}});
  }
  if (has(kChangeXattrs, "xattrs")) {
    j["xattrs"] = Json{
        {"added", c.xattrs_added}, {"removed", c.xattrs_removed}, {"changed", c.xattrs_changed}};
  }
  if (has(kChangeMtime, "mtime")) j["mtime"] = OldNew(Mtime(a), Mtime(b));
  if (has(kChangeTarget, "target")) j["target"] = OldNew(c.old_target, c.new_target);
  if (has(kChangeRdev, "device")) {
    j["device"] = OldNew(Json{{"major", major(a.rdev)}, {"minor", minor(a.rdev)}},
                         Json{{"major", major(b.rdev)}, {"minor", minor(b.rdev)}});
  }
  if (has(kChangeLinks, "links")) j["links"] = OldNew(c.old_links, c.new_links);
  return j;
}

Json SideJson(const std::string& image, const std::vector<std::string>& patches) {
  return Json{{"image", image}, {"patches", patches}};
}

}  // namespace

int CmdDiff(int argc, char** argv) {
  Args args(argc, argv, {"--trust", "--pubkey", "--patch", "--to-patch"}, {"--json"});
  if (args.help()) {
    std::printf(
        "usage: cryptex diff OLD NEW [--json] [--trust DIR | --pubkey FILE]\n"
        "       cryptex diff OLD [--patch PATCH ...] --to-patch PATCH [--json]\n"
        "                    [--trust DIR | --pubkey FILE]\n\n"
        "Lists what differs between two trees: two base images OLD and NEW, or OLD\n"
        "with the --patch patches applied (repeatable, bottom first) before and after\n"
        "also applying the --to-patch patch. One line per path, a directory before\n"
        "its entries, entries by name (bytes):\n"
        "  + PATH   added (with everything below it)\n"
        "  - PATH   removed (with everything below it)\n"
        "  M PATH (WHAT, ...)   changed: type, content, mode, owner, xattrs, mtime,\n"
        "           target (symlinks), device (device nodes), links (hard links)\n"
        "On a terminal, names holding control characters or invalid UTF-8 are shown\n"
        "quoted for bash, as ls does. --json prints one document with every detail.\n"
        "Exit status: 0 whether or not the trees differ (1 means an error in\n"
        "cryptex), 3 an image is corrupt or badly signed, 2 usage, 5 no such image.\n");
    return kExitOk;
  }
  if (!args.ok()) return Usage("diff", args.error());
  const auto& pos = args.positional();
  const std::vector<std::string> patches = args.GetAll("--patch");
  const auto to_patch = args.Get("--to-patch");
  if (args.GetAll("--to-patch").size() > 1) {
    return Usage("diff", "--to-patch given more than once (stack the lower ones with --patch)");
  }
  std::string new_image;
  std::vector<std::string> new_patches = patches;
  if (to_patch) {
    if (pos.size() != 1) return Usage("diff", "with --to-patch, expected one image OLD");
    new_image = pos[0];
    new_patches.push_back(*to_patch);
  } else {
    if (pos.size() != 2) return Usage("diff", "expected OLD NEW, or OLD --to-patch PATCH");
    if (!patches.empty()) return Usage("diff", "--patch needs --to-patch (OLD NEW compares bases)");
    new_image = pos[1];
  }
  auto old_view = OpenView(pos[0], patches, args);
  if (!old_view.ok()) return Fail("diff", old_view.status());
  auto new_view = to_patch ? OpenView(new_image, new_patches, args, "--to-patch")
                           : OpenView(new_image, {}, args);
  if (!new_view.ok()) return Fail("diff", new_view.status());
  auto changes = DiffTrees(**old_view, **new_view);
  if (!changes.ok()) return Fail("diff", changes.status());
  if (!args.Has("--json")) return PrintHuman(*changes);
  Json list = Json::array();
  for (const auto& c : *changes) list.push_back(ChangeJson(c));
  return PrintJson("diff", Json{{"old", SideJson(pos[0], patches)},
                                {"new", SideJson(new_image, new_patches)},
                                {"changes", std::move(list)}});
}

}  // namespace cryptex::cli
