# refreshd: build, install and uninstall.
#   make                      release build
#   make install              PREFIX=/usr (default) DESTDIR= (staging root), SYSCONFDIR=/etc
#   make uninstall            removes what install put in place; keeps the ledger, spool and config
#   make uninstall PURGE=1    also removes /var/lib/refreshd, /var/spool/refreshd and /etc/refreshd
#   make verify               systemd-analyze verify + security (offline) on a staged install
PREFIX ?= /usr
DESTDIR ?=
SYSCONFDIR ?= /etc
BINDIR = $(PREFIX)/bin
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
DOCDIR = $(PREFIX)/share/doc/refreshd
SWIFT ?= swift
# Where the binaries to install are (tests stage debug builds with BINARIES=.build/debug).
BINARIES ?= .build/release

.PHONY: all build install install-files uninstall verify

all: build

build:
	$(SWIFT) build -c release --product refreshd
	$(SWIFT) build -c release --product refreshctl

install: build install-files

install-files:
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(DOCDIR)
	install -m 0755 $(BINARIES)/refreshd $(BINARIES)/refreshctl $(DESTDIR)$(BINDIR)/
	sed 's|/usr/bin/refreshd|$(BINDIR)/refreshd|; s|/etc/refreshd|$(SYSCONFDIR)/refreshd|g; s|/usr/share/doc|$(PREFIX)/share/doc|' \
		systemd/refreshd.service > $(DESTDIR)$(UNITDIR)/refreshd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/refreshd.service
	install -m 0644 systemd/refreshd.sysusers $(DESTDIR)$(SYSUSERSDIR)/refreshd.conf
	sed 's|/etc/refreshd|$(SYSCONFDIR)/refreshd|g' systemd/refreshd.tmpfiles > $(DESTDIR)$(TMPFILESDIR)/refreshd.conf
	chmod 0644 $(DESTDIR)$(TMPFILESDIR)/refreshd.conf
	install -m 0644 README.md CHANGELOG.md docs/dispatcher.md docs/openapi.json $(DESTDIR)$(DOCDIR)/
	$(BINARIES)/refreshd --help > $(DESTDIR)$(DOCDIR)/refreshd.txt
	$(BINARIES)/refreshctl --help > $(DESTDIR)$(DOCDIR)/refreshctl.txt
	install -d -m 0750 $(DESTDIR)$(SYSCONFDIR)/refreshd
	# The example configuration never overwrites one in place.
	test -e $(DESTDIR)$(SYSCONFDIR)/refreshd/refreshd.toml || install -m 0640 config/refreshd.toml $(DESTDIR)$(SYSCONFDIR)/refreshd/refreshd.toml
	@if [ -z "$(DESTDIR)" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then \
		systemd-sysusers $(SYSUSERSDIR)/refreshd.conf && systemd-tmpfiles --create $(TMPFILESDIR)/refreshd.conf && \
		chgrp refreshd $(SYSCONFDIR)/refreshd $(SYSCONFDIR)/refreshd/refreshd.toml && systemctl daemon-reload; \
		echo "installed; next: put the API key in $(SYSCONFDIR)/refreshd/sendgrid-api-key (0640 root:refreshd), then systemctl enable --now refreshd"; \
	fi

uninstall:
	-@if [ -z "$(DESTDIR)" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then systemctl disable --now refreshd 2>/dev/null; fi
	rm -f $(DESTDIR)$(BINDIR)/refreshd $(DESTDIR)$(BINDIR)/refreshctl $(DESTDIR)$(UNITDIR)/refreshd.service \
		$(DESTDIR)$(SYSUSERSDIR)/refreshd.conf $(DESTDIR)$(TMPFILESDIR)/refreshd.conf
	rm -rf $(DESTDIR)$(DOCDIR)
	@if [ -n "$(PURGE)" ]; then rm -rf $(DESTDIR)/var/lib/refreshd $(DESTDIR)/var/spool/refreshd $(DESTDIR)$(SYSCONFDIR)/refreshd; \
		echo "purged the ledger, the spool and the configuration"; \
	else echo "kept the ledger (/var/lib/refreshd), the spool and $(SYSCONFDIR)/refreshd (make uninstall PURGE=1 removes them)"; fi

verify: build
	rm -rf .build/stage && $(MAKE) --no-print-directory install DESTDIR=$(CURDIR)/.build/stage
	# Verified against the host's systemd, with ExecStart pointing at the staged binary.
	mkdir -p .build/verify
	sed 's|^ExecStart=$(BINDIR)/refreshd|ExecStart=$(CURDIR)/.build/stage$(BINDIR)/refreshd|' \
		.build/stage$(UNITDIR)/refreshd.service > .build/verify/refreshd.service
	systemd-analyze verify .build/verify/refreshd.service
	systemd-analyze security --offline=yes --threshold=20 .build/verify/refreshd.service
